"""The appliance's one config file: TOML in, frozen dataclasses out.

Every key has a default, so an empty file is a valid config. Unknown keys, wrong types and values out
of range are a ``ConfigError`` that names the file, the key and what is allowed. Relative paths in
the file are taken relative to the file's own folder. Each field's metadata (``doc``, and ``choices``
or ``min``/``max`` where they apply) drives validation, ``appliance config show`` and the README's
config reference, so the three cannot drift apart.

The parts: ``schema`` (the sections and their keys), ``checks`` (values that need more than a type
and a range), ``loading`` (TOML in) and ``writing`` (TOML and the reference table out). Everything
a caller needs is importable from ``appliance.config``.
"""

from appliance.config.checks import I2C_PINS, ID_EEPROM_PINS, PIN_KEYS, ssh_key_lines
from appliance.config.loading import config_from_dict, config_path, load_config, parse_bytes
from appliance.config.schema import (DEVICE_CONFIG_PATH, CameraConfig, Config, DetectorConfig, GpioConfig, KeepConfig, ModelConfig,
                                     StatusConfig, StorageConfig, SystemConfig, WebConfig, describe_allowed, iter_keys)
from appliance.config.writing import reference_markdown, remove_clear_text, replace_clear_text, to_toml

__all__ = ["DEVICE_CONFIG_PATH", "I2C_PINS", "ID_EEPROM_PINS", "PIN_KEYS", "CameraConfig", "Config", "DetectorConfig", "GpioConfig",
           "KeepConfig", "ModelConfig", "StatusConfig", "StorageConfig", "SystemConfig", "WebConfig", "config_from_dict", "config_path",
           "describe_allowed", "iter_keys", "load_config", "parse_bytes", "reference_markdown", "remove_clear_text",
           "replace_clear_text", "ssh_key_lines", "to_toml"]
