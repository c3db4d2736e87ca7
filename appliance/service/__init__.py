"""The running appliance: the composition root and what it talks to the OS through.

* ``app`` — ``Appliance``: builds config, camera, classifier, store, writer, loop and panel in order
  and closes them in reverse.
* ``control`` — the local control channel (a Unix socket) the page uses to pause, resume or offload.
* ``status`` — live status on tmpfs under ``/run``, never the SD card.
* ``sdnotify`` — systemd's readiness and watchdog notifications.
"""
