"""Validates containerlab topology files against containerlab's JSON schema.

Usage: validate_clab.py SCHEMA FILE...; prints one line per error (file: path: message) and exits 1 when any
file is invalid. Debian: python3-jsonschema, python3-yaml."""

import json
import sys

import jsonschema
import yaml

schema = json.load(open(sys.argv[1]))
validator = jsonschema.Draft7Validator(schema)
bad = False
for path in sys.argv[2:]:
    with open(path) as f:
        doc = yaml.safe_load(f)
    for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
        bad = True
        where = "/".join(str(p) for p in e.absolute_path) or "(top)"
        print(f"{path}: {where}: {e.message}")
sys.exit(1 if bad else 0)
