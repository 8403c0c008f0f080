//! Topology → every engine's configuration for one node. The rule of the house: each engine crate owns the
//! translation of the resolved topology into its own types (`dpdk::Config::from_topology`, the snapshot
//! `Builder`, `SpeakerConfig::from_topology`, `bfd_peers`, `announcements`, `Monitor::start`); this module
//! only gathers what the topology does not hold itself — the password files it names, the process id for the
//! EAL prefix, the command-line options — and calls them.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anylb_conf::NodeConfig;
use anylb_dataplane::dpdk;
use anylb_routing::bfd;
use anylb_routing::config::{bfd_peers, Md5Key, Md5KeyError, SpeakerConfig};

/// Why a node cannot be assembled.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    /// The topology did not load (every error with its location).
    #[error("{0}")]
    Topology(#[from] anylb_conf::Diagnostics),
    /// The topology has no node of that name.
    #[error("{file}: no node named {node:?}")]
    NoNode {
        /// The topology file.
        file: PathBuf,
        /// The name asked for.
        node: String,
    },
    /// A neighbour's password file cannot be used.
    #[error("BGP neighbour {neighbor}: {source}")]
    Password {
        /// The neighbour.
        neighbor: IpAddr,
        /// What is wrong with its file.
        source: PasswordError,
    },
    /// A key file (the connection sync's, the SYN cookies') cannot be used.
    #[error("{key} {}: {reason}", path.display())]
    Key {
        /// The topology key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: KeyError,
    },
}

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// It cannot be read.
    #[error("{0}")]
    Read(#[from] std::io::Error),
    /// Too short to authenticate anything.
    #[error("the key is {0} bytes; at least {MIN_KEY} are needed")]
    TooShort(usize),
}

/// The shortest key accepted (128 bits).
pub const MIN_KEY: usize = 16;

/// Why a TCP-MD5 password file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// It cannot be read.
    #[error("password file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Its content is not a usable key.
    #[error("password file {}: {source}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with the key.
        source: Md5KeyError,
    },
}

/// Everything a node runs with, from its topology.
#[derive(Debug)]
pub struct Assembly {
    /// The node's resolved topology.
    pub cfg: NodeConfig,
    /// The DPDK runtime.
    pub dataplane: dpdk::Config,
    /// The BGP speaker, when the node speaks BGP.
    pub speaker: Option<SpeakerConfig>,
    /// BFD sessions to BGP neighbours.
    pub bfd: Vec<bfd::Peer>,
    /// The connection sync: its key and this node's index among the members, when sync is on.
    pub sync: Option<(Vec<u8>, usize)>,
    /// The secret of the SYN cookies, when the cluster sets one.
    pub cookie_secret: Option<Vec<u8>>,
}

/// Loads topology file `path` and assembles node `node`; `taps` false disables TAP exception interfaces.
pub fn assemble(path: &Path, node: &str, taps: bool) -> Result<Assembly, AssembleError> {
    let topo = anylb_conf::load_file(path)?;
    let cfg = topo.resolve(node).ok_or_else(|| AssembleError::NoNode {
        file: path.to_owned(),
        node: node.to_owned(),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let dataplane = dpdk::Config::from_topology(&cfg, &std::process::id().to_string(), taps);
    let speaker = SpeakerConfig::from_topology(&cfg, &md5_keys(&cfg, base)?);
    let (bfd, unplaced) = bfd_peers(&cfg);
    for n in unplaced {
        tracing::warn!(neighbor = %n, "BFD: no local address on the neighbour's subnet; not started");
    }
    let sync = match &cfg.sync {
        Some(s) => {
            let key = read_key("cluster.sync.key_file", &base.join(&s.settings.key_file))?;
            let me = s.members.iter().position(|m| m.name == cfg.node.name);
            me.map(|me| (key, me))
        }
        None => None,
    };
    let cookie_secret = match &cfg.syn_proxy {
        Some(sp) => Some(read_key("cluster.syn_proxy.key_file", &base.join(&sp.key_file))?),
        None => None,
    };
    Ok(Assembly {
        cfg,
        dataplane,
        speaker,
        bfd,
        sync,
        cookie_secret,
    })
}

/// Reads the key file topology key `key` names: its content without one trailing newline, at least
/// [`MIN_KEY`] bytes.
pub fn read_key(key: &'static str, path: &Path) -> Result<Vec<u8>, AssembleError> {
    let fail = |reason| AssembleError::Key {
        key,
        path: path.to_owned(),
        reason,
    };
    let mut raw = std::fs::read(path).map_err(|e| fail(e.into()))?;
    if raw.last() == Some(&b'\n') {
        raw.pop();
    }
    if raw.len() < MIN_KEY {
        return Err(fail(KeyError::TooShort(raw.len())));
    }
    Ok(raw)
}

/// The TCP-MD5 keys of the node's neighbours, read from their password files (a relative path is taken from
/// `base`, the topology file's directory).
fn md5_keys(cfg: &NodeConfig, base: &Path) -> Result<BTreeMap<IpAddr, Md5Key>, AssembleError> {
    let mut keys = BTreeMap::new();
    for n in cfg.node.bgp.iter().flat_map(|b| &b.neighbors) {
        if let Some(f) = &n.password_file {
            let key = read_password_file(&base.join(f)).map_err(|source| AssembleError::Password {
                neighbor: n.address,
                source,
            })?;
            keys.insert(n.address, key);
        }
    }
    Ok(keys)
}

/// Reads a TCP-MD5 password file: its content without one trailing newline, 1 to 80 bytes.
pub fn read_password_file(path: &Path) -> Result<Md5Key, PasswordError> {
    let raw = std::fs::read(path).map_err(|source| PasswordError::Read {
        path: path.to_owned(),
        source,
    })?;
    let key = raw.strip_suffix(b"\n").unwrap_or(&raw);
    let key = key.strip_suffix(b"\r").unwrap_or(key);
    Md5Key::new(key).map_err(|source| PasswordError::Key {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_files_are_read_relative_to_the_topology_and_named_in_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("r1.key"), "s3cret\n").expect("write");
        let topology = |file: &str| {
            format!(
                r#"[cluster]
name = "c"
asn = 65010
[[nodes]]
name = "lb1"
router_id = "192.0.2.11"
[nodes.dataplane]
workers = [1]
[[nodes.dataplane.ports]]
name = "up0"
device = "net_null0"
addresses = ["192.0.2.11/24"]
[nodes.bgp]
[[nodes.bgp.neighbors]]
address = "192.0.2.1"
asn = 65000
gtsm = true
bfd = {{ enabled = true }}
password_file = "{file}"
"#
            )
        };
        let path = dir.path().join("t.toml");
        std::fs::write(&path, topology("r1.key")).expect("write");
        let a = assemble(&path, "lb1", false).expect("assembles");
        let n = &a.speaker.expect("bgp").neighbors[0];
        assert_eq!(n.md5_key.as_ref().map(Md5Key::bytes), Some(&b"s3cret"[..]));
        assert_eq!(n.gtsm_hops, Some(1));
        assert_eq!(a.bfd.len(), 1);
        assert_eq!(a.bfd[0].local, "192.0.2.11".parse::<IpAddr>().expect("addr"));
        std::fs::write(&path, topology("missing.key")).expect("write");
        let e = assemble(&path, "lb1", false)
            .expect_err("missing file")
            .to_string();
        assert!(
            e.contains("BGP neighbour 192.0.2.1") && e.contains("missing.key"),
            "{e}"
        );
        let e = assemble(&path, "lb9", false).expect_err("no node").to_string();
        assert!(e.ends_with("no node named \"lb9\""), "{e}");
    }

    #[test]
    fn key_files_are_read_and_must_be_long_enough() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("sync.key");
        std::fs::write(&f, "0123456789abcdef\n").expect("write");
        assert_eq!(
            read_key("cluster.sync.key_file", &f).expect("key"),
            b"0123456789abcdef"
        );
        std::fs::write(&f, "short\n").expect("write");
        let e = read_key("cluster.syn_proxy.key_file", &f)
            .expect_err("short")
            .to_string();
        assert!(e.contains("sync.key") && e.contains("5 bytes"), "{e}");
        assert!(e.starts_with("cluster.syn_proxy.key_file"), "{e}");
        let e = read_key("cluster.sync.key_file", &dir.path().join("none"))
            .expect_err("missing")
            .to_string();
        assert!(e.starts_with("cluster.sync.key_file"), "{e}");
    }

    #[test]
    fn password_files_must_hold_a_usable_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").expect("write");
        let e = read_password_file(&empty).expect_err("empty").to_string();
        assert!(e.contains("empty"), "{e}");
        let long = dir.path().join("long");
        std::fs::write(&long, "x".repeat(81)).expect("write");
        let e = read_password_file(&long).expect_err("long").to_string();
        assert!(e.contains("81 bytes"), "{e}");
    }
}
