#!/bin/bash
# Inside the all-in-one test cloud container (installed as /usr/local/sbin/aio
# by tests/openstack/cloud.sh; not meant to run on the host).
#
#   aio configure     once, at image build: config files, databases, migrations,
#                     Keystone users/endpoints, the flat network; then stops all
#   aio run           the container's command: start every daemon, keep them up
#   aio ready         exit 0 when every API answers and compute/agents are up
#   aio stop NAME     stop one daemon and keep it down (tests: "the cloud goes away")
#   aio start NAME    let it come back
#
# There is no init here (the Debian init scripts assume one, libvirt has no
# SysV script): each daemon runs in the background with a pid file under
# /run/aio and its log under /var/log/aio; `aio run` restarts any that died
# unless it is held down by `aio stop`.
set -euo pipefail

PW=mecorch-test-cloud          # every service password: a throwaway cloud on loopback
DB="mysql+pymysql://os:$PW@127.0.0.1"
RABBIT="rabbit://guest:guest@127.0.0.1:5672/"   # guest may connect over loopback only
KS=http://127.0.0.1:35357
RUN=/run/aio
LOG=/var/log/aio
# The flat provider network: one end of a veth pair goes to Neutron's bridge,
# the other keeps the gateway address in the container's own namespace, so
# the container (and the host through nsenter/docker exec) can reach the VMs.
PHYS_IF=osx-phys
GW_IF=osx-gw
GW_CIDR=10.99.0.1/24

say() { printf '[aio %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
mkdir -p "$RUN" "$LOG"

# ------------------------------------------------------------ configuration
auth_section() {   # auth_section USER -> keystone password auth lines
  cat <<EOF
auth_url = $KS
www_authenticate_uri = $KS
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = $1
password = $PW
region_name = RegionOne
EOF
}

write_configs() {
  cat >/etc/keystone/keystone.conf <<EOF
[DEFAULT]
[database]
connection = $DB/keystone
[token]
provider = fernet
EOF

  cat >/etc/glance/glance-api.conf <<EOF
[DEFAULT]
bind_host = 0.0.0.0
bind_port = 9292
workers = 1
[database]
connection = $DB/glance
[keystone_authtoken]
$(auth_section glance)
[paste_deploy]
flavor = keystone
[glance_store]
stores = file
default_store = file
filesystem_store_datadir = /var/lib/glance/images/
[oslo_concurrency]
lock_path = /var/lib/glance/tmp
EOF

  cat >/etc/placement/placement.conf <<EOF
[DEFAULT]
[api]
auth_strategy = keystone
[placement_database]
connection = $DB/placement
[keystone_authtoken]
$(auth_section placement)
EOF

  cat >/etc/nova/nova.conf <<EOF
[DEFAULT]
transport_url = $RABBIT
my_ip = 127.0.0.1
state_path = /var/lib/nova
compute_driver = libvirt.LibvirtDriver
enabled_apis = osapi_compute
osapi_compute_workers = 1
# The guests have no metadata service and no config drive need.
[api]
auth_strategy = keystone
[api_database]
connection = $DB/nova_api
[database]
connection = $DB/nova
[keystone_authtoken]
$(auth_section nova)
[placement]
$(auth_section placement)
[neutron]
$(auth_section neutron)
service_metadata_proxy = false
[glance]
region_name = RegionOne
[conductor]
workers = 1
[scheduler]
workers = 1
[libvirt]
virt_type = qemu
cpu_mode = none
[vnc]
enabled = false
[oslo_concurrency]
lock_path = /var/lib/nova/tmp
[wsgi]
api_paste_config = /etc/nova/api-paste.ini
EOF
  # nova's own users need the admin role on the service project; [placement]
  # and [neutron] reuse placement's and neutron's users.

  cat >/etc/neutron/neutron.conf <<EOF
[DEFAULT]
core_plugin = ml2
service_plugins =
auth_strategy = keystone
transport_url = $RABBIT
bind_host = 0.0.0.0
bind_port = 9696
api_workers = 1
rpc_workers = 1
rpc_state_report_workers = 1
notify_nova_on_port_status_changes = true
notify_nova_on_port_data_changes = true
[experimental]
# linuxbridge is "experimental" in Zed: without this the API workers crash-loop.
linuxbridge = true
[database]
connection = $DB/neutron
[keystone_authtoken]
$(auth_section neutron)
[nova]
$(auth_section nova)
[oslo_concurrency]
lock_path = /var/lib/neutron/tmp
[agent]
root_helper = sudo
EOF

  cat >/etc/neutron/plugins/ml2/ml2_conf.ini <<EOF
[ml2]
type_drivers = flat
tenant_network_types =
mechanism_drivers = linuxbridge
extension_drivers = port_security
[ml2_type_flat]
flat_networks = physnet1
EOF

  cat >/etc/neutron/plugins/ml2/linuxbridge_agent.ini <<EOF
[linux_bridge]
# bridge_mappings left the VMs without DHCP here; an interface mapping works.
physical_interface_mappings = physnet1:$PHYS_IF
[vxlan]
enable_vxlan = false
[securitygroup]
firewall_driver = noop
EOF

  cat >/etc/neutron/dhcp_agent.ini <<EOF
[DEFAULT]
interface_driver = linuxbridge
dhcp_driver = neutron.agent.linux.dhcp.Dnsmasq
enable_isolated_metadata = false
EOF

  # libvirt inside the container: no polkit/D-Bus, no cgroup or mount
  # namespace games, everything as root.
  cat >/etc/libvirt/libvirtd.conf <<EOF
unix_sock_group = "root"
unix_sock_rw_perms = "0770"
auth_unix_ro = "none"
auth_unix_rw = "none"
EOF
  cat >/etc/libvirt/qemu.conf <<EOF
user = "root"
group = "root"
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
EOF
  cat >/etc/rabbitmq/rabbitmq-env.conf <<EOF
NODENAME=rabbit@localhost
NODE_IP_ADDRESS=127.0.0.1
EOF
  cat >/etc/mysql/mariadb.conf.d/99-aio.cnf <<EOF
[mysqld]
bind-address = 127.0.0.1
skip-name-resolve
max_connections = 500
innodb_buffer_pool_size = 128M
EOF
  mkdir -p /var/lib/nova/tmp /var/lib/neutron/tmp /var/lib/glance/tmp /var/lib/glance/images
}

# ------------------------------------------------------------ daemons
# name -> command line (run by `bash -c exec ...`, so it may hold quotes)
declare -A CMD=(
  [mariadb]="mariadbd --user=mysql"
  [rabbitmq]="rabbitmq-server"
  [virtlogd]="virtlogd"
  [libvirtd]="libvirtd"
  [keystone]="uwsgi --plugin python3 --http-socket 0.0.0.0:35357 --wsgi-file /usr/bin/keystone-wsgi-public --master --processes 2 --threads 1 --die-on-term --add-header \"Connection: close\""
  [glance-api]="glance-api --config-file /etc/glance/glance-api.conf"
  [placement-api]="uwsgi --plugin python3 --http-socket 0.0.0.0:8778 --wsgi-file /usr/bin/placement-api --master --processes 1 --threads 2 --die-on-term --add-header \"Connection: close\""
  [nova-api]="uwsgi --plugin python3 --http-socket 0.0.0.0:8774 --wsgi-file /usr/bin/nova-api-wsgi --master --processes 2 --threads 1 --die-on-term --add-header \"Connection: close\""
  [neutron-server]="neutron-server --config-file /etc/neutron/neutron.conf --config-file /etc/neutron/plugins/ml2/ml2_conf.ini"
  [nova-conductor]="nova-conductor --config-file /etc/nova/nova.conf"
  [nova-scheduler]="nova-scheduler --config-file /etc/nova/nova.conf"
  [nova-compute]="nova-compute --config-file /etc/nova/nova.conf"
  [linuxbridge-agent]="neutron-linuxbridge-agent --config-file /etc/neutron/neutron.conf --config-file /etc/neutron/plugins/ml2/linuxbridge_agent.ini"
  [dhcp-agent]="neutron-dhcp-agent --config-file /etc/neutron/neutron.conf --config-file /etc/neutron/dhcp_agent.ini"
)
ORDER=(mariadb rabbitmq virtlogd libvirtd keystone glance-api placement-api nova-api neutron-server
       nova-conductor nova-scheduler nova-compute linuxbridge-agent dhcp-agent)

alive() { local p; p=$(cat "$RUN/$1.pid" 2>/dev/null) && kill -0 "$p" 2>/dev/null; }

start_one() {
  alive "$1" && return 0
  rm -f "$RUN/$1.held"
  [ "$1" = mariadb ] && { mkdir -p /run/mysqld; chown mysql:mysql /run/mysqld; }
  setsid bash -c "exec ${CMD[$1]}" >>"$LOG/$1.log" 2>&1 </dev/null &
  echo $! >"$RUN/$1.pid"
}

stop_one() {
  local p; p=$(cat "$RUN/$1.pid" 2>/dev/null) || return 0
  touch "$RUN/$1.held"
  # each daemon runs in its own session: signal the whole group (uwsgi workers, rabbit's beam)
  kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 60); do kill -0 "$p" 2>/dev/null || break; sleep 0.5; done
  kill -KILL -- "-$p" 2>/dev/null || true
  rm -f "$RUN/$1.pid"
}

wait_for() {  # wait_for WHAT SECONDS CMD...
  local what=$1 t=$2; shift 2
  for _ in $(seq "$t"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  say "$what did not come up; last log lines:"; tail -30 "$LOG/$what.log" 2>/dev/null || true
  return 1
}
http_up() { curl -s -o /dev/null --max-time 3 "$1"; }

network_up() {
  ip link show "$PHYS_IF" >/dev/null 2>&1 || ip link add "$PHYS_IF" type veth peer name "$GW_IF"
  ip link set "$PHYS_IF" up; ip link set "$GW_IF" up
  ip addr show dev "$GW_IF" | grep -q "${GW_CIDR%/*}/" || ip addr add "$GW_CIDR" dev "$GW_IF"
}

start_all() {
  network_up
  start_one mariadb;  wait_for mariadb 60 mariadb-admin ping
  start_one rabbitmq; wait_for rabbitmq 120 rabbitmqctl -q await_startup
  start_one virtlogd; start_one libvirtd; wait_for libvirtd 30 virsh -c qemu:///system version
  start_one keystone; wait_for keystone 60 http_up $KS/v3
  for s in glance-api placement-api nova-api neutron-server; do start_one "$s"; done
  wait_for glance-api 90 http_up http://127.0.0.1:9292/
  wait_for placement-api 90 http_up http://127.0.0.1:8778/
  wait_for nova-api 120 http_up http://127.0.0.1:8774/
  wait_for neutron-server 120 http_up http://127.0.0.1:9696/
  for s in nova-conductor nova-scheduler nova-compute linuxbridge-agent dhcp-agent; do start_one "$s"; done
}

clean_netns() {
  local ns
  for ns in /run/netns/*; do
    [ -e "$ns" ] || continue
    umount "$ns" 2>/dev/null || true
    rm -f "$ns"
  done
}

stop_all() {
  local i
  for ((i=${#ORDER[@]}-1; i>=0; i--)); do stop_one "${ORDER[$i]}"; done
  rm -f "$RUN"/*.held
}

# ------------------------------------------------------------ commands
configure() {
  write_configs
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >"$LOG/mariadb-install.log" 2>&1
  network_up
  start_one mariadb; wait_for mariadb 60 mariadb-admin ping
  say "databases"
  for d in keystone glance placement nova_api nova nova_cell0 neutron; do
    echo "CREATE DATABASE IF NOT EXISTS $d;"
  done | mariadb
  mariadb -e "CREATE USER IF NOT EXISTS 'os'@'%' IDENTIFIED BY '$PW'; GRANT ALL ON *.* TO 'os'@'%'; FLUSH PRIVILEGES;"
  say "migrations"
  keystone-manage db_sync
  keystone-manage fernet_setup --keystone-user keystone --keystone-group keystone
  keystone-manage credential_setup --keystone-user keystone --keystone-group keystone
  keystone-manage bootstrap --bootstrap-password "$PW" \
    --bootstrap-admin-url $KS/v3/ --bootstrap-internal-url $KS/v3/ --bootstrap-public-url $KS/v3/ \
    --bootstrap-region-id RegionOne
  glance-manage db_sync >"$LOG/glance-manage.log" 2>&1
  placement-manage db sync
  nova-manage api_db sync
  nova-manage cell_v2 map_cell0 --database_connection "$DB/nova_cell0"
  nova-manage cell_v2 list_cells | grep -q ' cell1 ' || nova-manage cell_v2 create_cell --name cell1
  nova-manage db sync
  neutron-db-manage --config-file /etc/neutron/neutron.conf \
    --config-file /etc/neutron/plugins/ml2/ml2_conf.ini upgrade heads >"$LOG/neutron-db-manage.log" 2>&1
  start_one rabbitmq; wait_for rabbitmq 120 rabbitmqctl -q await_startup
  start_one keystone; wait_for keystone 60 http_up $KS/v3
  say "keystone users, services, endpoints"
  python3 /usr/local/sbin/aio-bootstrap.py identity
  start_all
  say "waiting for nova-compute to register, then mapping it to cell1"
  python3 /usr/local/sbin/aio-bootstrap.py wait-compute
  nova-manage cell_v2 discover_hosts --verbose
  python3 /usr/local/sbin/aio-bootstrap.py network
  python3 /usr/local/sbin/aio-bootstrap.py ready
  say "stopping the services for the image commit"
  stop_all
  clean_netns
  say "configured"
}

run() {
  # A restarted container (or the committed image) keeps its files but not
  # its processes or mounts: stale pid files, and the DHCP agent's netns
  # files that are no longer nsfs mounts ("failed to open netns").
  rm -f "$RUN"/*.pid "$RUN"/*.held /run/mysqld/mysqld.pid /run/libvirtd.pid /run/virtlogd.pid
  clean_netns
  trap 'stop_all; exit 0' TERM INT
  start_all || true
  say "started; keeping the daemons up"
  while :; do
    for s in "${ORDER[@]}"; do
      if ! alive "$s" && [ ! -e "$RUN/$s.held" ]; then
        say "$s is not running: starting it"; start_one "$s"
      fi
    done
    sleep 5 & wait $!
  done
}

case "${1:-}" in
  configure) configure ;;
  run) run ;;
  ready) python3 /usr/local/sbin/aio-bootstrap.py ready ;;
  stop) stop_one "$2" ;;
  start) rm -f "$RUN/$2.held"; start_one "$2" ;;
  *) echo "usage: aio configure|run|ready|stop NAME|start NAME" >&2; exit 2 ;;
esac
