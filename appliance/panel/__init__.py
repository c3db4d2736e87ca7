"""The camera's LEDs and buttons.

* ``indicator`` — what each state looks like on the two LEDs: pure patterns, no pins.
* ``gpio`` — gpiozero devices for the LEDs and buttons (the Pi's pins, or gpiozero's ``MockFactory``).
* ``controller`` — turns button events into actions and the appliance's state into LED patterns.
"""
