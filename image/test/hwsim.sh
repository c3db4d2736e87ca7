#!/bin/sh
# The boot test's Wi-Fi, on the card (as root): two simulated radios (mac80211_hwsim). The first,
# wlan0, is the camera's, left to NetworkManager; the second, wlan1, is moved into the network
# namespace "air", where wpa_supplicant and busybox play a test access point (with a DHCP server) or
# a phone joining the camera's hotspot, so that what they exchange goes over the simulated air and
# not through the camera's own loopback.
#
#   hwsim.sh setup                      load the radios, move wlan1 into "air"
#   hwsim.sh ap SSID PASSPHRASE         a WPA2 access point on 10.77.0.1/24 that gives out addresses
#   hwsim.sh join SSID PASSPHRASE       a WPA2 client: exit 0 once associated and addressed (prints the address)
#   hwsim.sh get URL                    fetch URL from inside "air"; prints the HTTP status
#   hwsim.sh stop                       stop the access point or the client
#   hwsim.sh offline SSID PASSPHRASE    the field: the access point gone and the Ethernet disconnected;
#                                       waits for the camera's hotspot (SSID, PASSPHRASE), joins it,
#                                       loads the page, tries a wrong passphrase, reconnects the
#                                       Ethernet; results as key=value lines in /var/tmp/hwsim-offline
#                                       (run it detached, with systemd-run: SSH goes with the Ethernet)
set -eu
NS=air
run() { ip netns exec "$NS" "$@"; }

stop() {
    for pidfile in /run/air-wpa.pid /run/air-udhcpd.pid /run/air-udhcpc.pid; do
        if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; rm -f "$pidfile"; fi
    done
    sleep 1
    run ip addr flush dev wlan1 2>/dev/null || true
}

case "$1" in
setup)
    modprobe mac80211_hwsim radios=2
    i=0; until [ -e /sys/class/net/wlan1 ]; do i=$((i + 1)); [ $i -lt 100 ] || { echo "no wlan1" >&2; exit 1; }; sleep 0.2; done
    ip netns add "$NS"
    iw phy "$(cat /sys/class/net/wlan1/phy80211/name)" set netns name "$NS"
    run ip link set lo up
    ;;
ap)
    stop
    cat > /run/air-ap.conf <<EOF
ctrl_interface=/run/air-ctrl
ap_scan=2
network={
    ssid="$2"
    mode=2
    frequency=2437
    key_mgmt=WPA-PSK
    proto=RSN
    pairwise=CCMP
    group=CCMP
    psk="$3"
}
EOF
    run ip link set wlan1 up
    run ip addr add 10.77.0.1/24 dev wlan1
    run wpa_supplicant -B -i wlan1 -c /run/air-ap.conf -P /run/air-wpa.pid
    printf 'start 10.77.0.10\nend 10.77.0.20\ninterface wlan1\nopt subnet 255.255.255.0\nopt router 10.77.0.1\nlease_file /run/air-udhcpd.leases\npidfile /run/air-udhcpd.pid\n' \
        > /run/air-udhcpd.conf
    : > /run/air-udhcpd.leases
    run busybox udhcpd /run/air-udhcpd.conf
    ;;
join)
    stop
    cat > /run/air-sta.conf <<EOF
ctrl_interface=/run/air-ctrl
network={
    ssid="$2"
    scan_ssid=1
    key_mgmt=WPA-PSK
    proto=RSN
    psk="$3"
}
EOF
    run ip link set wlan1 up
    run wpa_supplicant -B -i wlan1 -c /run/air-sta.conf -P /run/air-wpa.pid
    i=0
    until run wpa_cli -p /run/air-ctrl -i wlan1 status 2>/dev/null | grep -qx 'wpa_state=COMPLETED'; do
        i=$((i + 1)); [ $i -lt 45 ] || { echo "not associated with $2 after 45 s" >&2; exit 1; }; sleep 1
    done
    # udhcpc only asks for the lease (-s /bin/true: no script); the address it names is set here.
    run busybox udhcpc -i wlan1 -n -q -t 10 -s /bin/true >/run/air-udhcpc.log 2>&1 ||
        { echo "associated, but no address from $2: $(tail -2 /run/air-udhcpc.log | paste -sd' ')" >&2; exit 1; }
    address=$(sed -n 's/.*lease of \([0-9.]*\) obtained.*/\1/p' /run/air-udhcpc.log | tail -1)
    [ -n "$address" ] || { echo "no lease in udhcpc's words: $(paste -sd' ' /run/air-udhcpc.log)" >&2; exit 1; }
    run ip addr add "$address/24" dev wlan1
    echo "$address"
    ;;
get)
    run python3 -c 'import sys, urllib.request, urllib.error
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=30).status)
except urllib.error.HTTPError as e:
    print(e.code)' "$2"
    ;;
stop)
    stop
    ;;
offline)
    out=/var/tmp/hwsim-offline
    rm -f "$out" "$out.partial"
    say() { echo "$1" >> "$out.partial"; }
    mode() { python3 -c 'import json; print(json.load(open("/run/appliance/network.json"))["mode"])' 2>/dev/null || true; }
    stop
    ethernet=$(nmcli -t -f DEVICE,TYPE device | awk -F: '$2 == "ethernet" {print $1; exit}')
    nmcli device disconnect "$ethernet" >/dev/null
    start=$(date +%s)
    i=0; until [ "$(mode)" = hotspot ]; do i=$((i + 1)); [ $i -lt 240 ] || break; sleep 1; done
    say "mode=$(mode)"
    say "hotspot_after_s=$(( $(date +%s) - start ))"
    say "active=$(nmcli -t -f NAME,DEVICE connection show --active | paste -sd,)"
    joined=$("$0" join "$2" "$3" 2>&1 | grep -v '^rfkill: ' || true)
    say "phone=$(echo "$joined" | tail -1)"
    say "phone_log=$(echo "$joined" | paste -sd'|')"
    say "stations=$(iw dev wlan0 station dump | grep -c '^Station' || true)"
    say "dnsmasq=$(pgrep -a dnsmasq | head -1)"
    say "page=$("$0" get http://10.42.0.1/ 2>&1 | tail -1)"
    "$0" stop
    # refused: never associated (not merely associated without an address)
    if wrong=$("$0" join "$2" "not the passphrase" 2>&1); then say "wrong=joined"
    elif echo "$wrong" | grep -q "^not associated"; then say "wrong=refused"
    else say "wrong=failed otherwise: $(echo "$wrong" | grep -v '^rfkill: ' | tail -1)"; fi
    "$0" stop
    nmcli device connect "$ethernet" >/dev/null
    mv "$out.partial" "$out"
    ;;
*)
    echo "usage: hwsim.sh setup|ap SSID PASS|join SSID PASS|get URL|stop" >&2; exit 2 ;;
esac
