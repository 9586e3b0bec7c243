#!/bin/sh
# Install the Debian 12 (OpenStack Zed) packages of the test control plane, without letting
# any package start a daemon, create a database or register itself in keystone: the test bed
# does all of that itself (see configure.py), on loopback only.
set -eu

PACKAGES="keystone glance-api placement-api nova-api nova-conductor nova-scheduler
nova-compute nova-compute-ironic neutron-server mariadb-server rabbitmq-server
python3-openstackclient uwsgi uwsgi-plugin-python3 python3-pymysql heat-api heat-engine"

# One dpkg-query for all: it prints a line only for packages it knows.
# shellcheck disable=SC2086
installed=$(dpkg-query -W -f='${Package} ${Status}\n' $PACKAGES 2>/dev/null \
    | awk '$NF == "installed" {print $1}')
missing=""
for p in $PACKAGES; do
    echo "$installed" | grep -qx "$p" || missing="$missing $p"
done
if [ -z "$missing" ]; then
    exit 0
fi

# No init system here: package scripts must not try to start daemons.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
fi

# Answer every openstack-pkg-tools question with "no": no dbconfig-common databases,
# no rabbit users, no keystone service users or endpoints from maintainer scripts.
{
    for q in keystone/configure_db keystone/create-admin-tenant keystone/register-endpoint \
             glance/configure_db glance/configure_rabbit glance/configure_ksat \
             glance/configure_api-endpoint \
             placement/configure_db placement/configure_ksat placement/configure_api-endpoint \
             nova/configure_db novaapi/configure_db nova/configure_rabbit nova/configure_ksat \
             nova/configure_neutron nova/configure_placement nova/configure_api-endpoint \
             neutron/configure_db neutron/configure_rabbit neutron/configure_ksat \
             neutron/configure_nova \
             heat/configure_with_debconf heat/configure_db heat/configure_rabbit \
             heat/configure_ksat heat/configure_api-endpoint; do
        owner=${q%%/*}
        echo "$owner-common $q boolean false"
    done
} | sed -e 's/^keystone-common /keystone /' -e 's/^novaapi-common /nova-api /' \
        -e 's|^heat-common heat/configure_api-endpoint |heat-api heat/configure_api-endpoint |' \
    | debconf-set-selections

# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y \
    --no-install-recommends $missing
