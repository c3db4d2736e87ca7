"""Taking kept images off the device, verified.

* ``export`` — names, label folders, manifests and the zip a person downloads.
* ``offload`` — the USB stick offload: copy, read back, verify by sha256, then mark.
* ``stick`` — finding, mounting and releasing a USB stick.
* ``sync`` — a laptop pulling new items, and corrections to those it has, from the page's sync API.
"""
