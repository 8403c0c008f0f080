#!/bin/sh
# The anylb image's entrypoint. containerlab starts a node's command before it attaches the node's links and
# says how many it will attach in CLAB_INTFS: wait (at most 60 s) until that many interfaces besides lo and
# eth0 (the management interface) exist, then run the command. Outside containerlab CLAB_INTFS is unset and
# the command runs at once.
want="${CLAB_INTFS:-0}"
waited=0
while [ "$(ls /sys/class/net | grep -cvx -e lo -e eth0)" -lt "$want" ]; do
  if [ "$waited" -ge 600 ]; then
    echo "entrypoint: only $(ls /sys/class/net | grep -cvx -e lo -e eth0) of $want interfaces after 60 s; starting anyway" >&2
    break
  fi
  sleep 0.1
  waited=$((waited + 1))
done
exec "$@"
