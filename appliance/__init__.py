"""Edge-AI camera appliance: classify every frame on the device, keep only the frames that matter."""

__version__ = "0.1.0"
