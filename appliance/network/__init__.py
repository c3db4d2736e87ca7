"""The network: NetworkManager joins Ethernet and the Wi-Fi of appliance.toml; when none is up, the
camera opens its own hotspot (``hotspot``: the decisions; ``nm``: NetworkManager through nmcli;
``service``: ``appliance network run`` and its files under the runtime dir)."""

HOTSPOT_ID = "appliance-hotspot"  # NetworkManager's connection id for the camera's access point
WIFI_ID = "appliance-wifi"  # and for the network of system.wifi_ssid
HOTSPOT_ADDRESS = "10.42.0.1"  # the camera on its hotspot (NetworkManager's shared mode: DHCP and DNS)
HOTSPOT_PREFIX = 24
