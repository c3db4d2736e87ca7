"""The device's own settings, applied as root at boot from the boot partition's config.

* ``settings`` — host name, time zone, Wi-Fi, SSH keys, the admin password, first boot.
* ``read_only_root`` — turning the overlay (read-only root) on and off.

Imports no Flask: it runs before the page exists.
"""
