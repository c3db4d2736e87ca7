"""What a kept JPEG says about itself to other tools: EXIF and XMP, beside the appliance's own record.

camtrapR, Timelapse, digiKam, Lightroom and ExifTool read these; the appliance reads its comment
record (``images``) and never these. Each keep gets:

* EXIF: ``DateTimeOriginal`` with ``SubSecTimeOriginal`` and ``OffsetTimeOriginal`` in the device's
  time zone (``system.timezone``; the record's ``captured_at`` is UTC); ``Make``, ``Model`` (the
  camera) and ``Software``; GPS from ``[deployment]`` when it has coordinates (latitude, longitude,
  their refs, WGS-84, ``GPSHPositioningError`` from ``coordinate_uncertainty_m``).
* XMP, in the namespace ``XMP_NAMESPACE`` (prefix ``appliance``): ``label``, ``score``, ``kind``,
  ``modelName``, ``modelSha256``, ``clockSource``, and ``eventID`` and ``deploymentID`` when there
  are; a match's label also as ``dc:subject``, the keyword photo managers list (an audit keep's is
  not: its label is what the model said of a frame it did not keep).

They are written as the image is encoded, so they are part of the bytes the record's ``jpeg_sha256``
covers. EXIF goes through Pillow's ``Image.Exif`` with each sub-IFD set as a dict, the one form
Pillow 9.4 (Raspberry Pi OS Bookworm) writes as well as newer ones.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from xml.sax.saxutils import escape, quoteattr
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from appliance import __version__

log = logging.getLogger(__name__)

XMP_NAMESPACE = "urn:appliance:xmp:1.0#"
XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"  # what names an APP1 segment as XMP
MAX_SEGMENT_BYTES = 65533  # a JPEG segment's length field counts itself: 65535 - 2
REPLAY_CAMERA = ("appliance", "replay camera")
# EXIF tag numbers (Exif 2.32; CIPA DC-008): 0th IFD, Exif IFD, GPS IFD.
_MAKE, _MODEL, _SOFTWARE, _EXIF_IFD, _GPS_IFD = 0x010F, 0x0110, 0x0131, 0x8769, 0x8825
_EXIF_VERSION, _DATE_TIME_ORIGINAL, _OFFSET_TIME_ORIGINAL, _SUBSEC_TIME_ORIGINAL = 0x9000, 0x9003, 0x9011, 0x9291
(_GPS_VERSION, _LAT_REF, _LAT, _LON_REF, _LON, _MAP_DATUM, _H_ERROR) = (0x00, 0x01, 0x02, 0x03, 0x04, 0x12, 0x1F)
_ARCSEC_PARTS = 10_000  # GPS seconds to 1/10000 of an arcsecond: 3 mm on the ground


@dataclass(frozen=True)
class ImageTags:
    """What every kept JPEG of one run says beyond its record: the camera, the time zone, the deployment."""

    timezone: str = "UTC"
    make: str = ""
    model: str = ""
    software: str = f"appliance {__version__}"
    deployment_id: str = ""
    latitude: float | None = None
    longitude: float | None = None
    coordinate_uncertainty_m: int = 0

    @classmethod
    def from_config(cls, config, camera_model: str | None = None) -> ImageTags:
        """The tags of ``config``'s device and deployment; ``camera_model`` is the camera's own name
        (libcamera's ``Model``, such as ``imx708``), known once it has started."""
        deployment = config.deployment
        make, model = REPLAY_CAMERA if config.camera.backend == "replay" else \
            ("Raspberry Pi", camera_model or "camera")  # what picamera2 and rpicam-apps write
        return cls(timezone=config.system.timezone, make=make, model=model, deployment_id=deployment.id,
                   latitude=deployment.latitude, longitude=deployment.longitude,
                   coordinate_uncertainty_m=deployment.coordinate_uncertainty_m)

    def exif(self, record: dict) -> bytes:
        """The EXIF block (``Exif\\0\\0`` and its TIFF structure) for a keep's ``record``."""
        from PIL import Image

        local, subsec, offset = local_time(record["captured_at"], self.timezone)
        exif = Image.Exif()
        for tag, text in ((_MAKE, self.make), (_MODEL, self.model), (_SOFTWARE, self.software)):
            if text:
                exif[tag] = text
        exif[_EXIF_IFD] = {_EXIF_VERSION: b"0232", _DATE_TIME_ORIGINAL: local.strftime("%Y:%m:%d %H:%M:%S"),
                           _OFFSET_TIME_ORIGINAL: offset, **({_SUBSEC_TIME_ORIGINAL: subsec} if subsec else {})}
        if self.latitude is not None and self.longitude is not None:
            exif[_GPS_IFD] = self._gps()
        return exif.tobytes()

    def _gps(self) -> dict:
        from PIL.TiffImagePlugin import IFDRational

        gps = {_GPS_VERSION: b"\x02\x03\x00\x00", _LAT_REF: "N" if self.latitude >= 0 else "S",
               _LAT: degrees_minutes_seconds(self.latitude), _LON_REF: "E" if self.longitude >= 0 else "W",
               _LON: degrees_minutes_seconds(self.longitude), _MAP_DATUM: "WGS-84"}
        if self.coordinate_uncertainty_m:
            gps[_H_ERROR] = IFDRational(self.coordinate_uncertainty_m, 1)
        return gps

    def xmp(self, record: dict) -> bytes:
        """The XMP packet for a keep's ``record``; b"" (and a warning) if it would not fit a JPEG segment."""
        fields = {"label": record["label"], "score": _decimal(record["score"]), "kind": record["kind"],
                  "modelName": record["model_name"], "modelSha256": record["model_sha256"],
                  "clockSource": record["clock_source"], "eventID": record.get("event_id") or "",
                  "deploymentID": self.deployment_id}
        properties = "".join(f"<appliance:{name}>{_xml_text(value)}</appliance:{name}>"
                             for name, value in fields.items() if value)
        if record["kind"] == "match":
            properties += f"<dc:subject><rdf:Bag><rdf:li>{_xml_text(record['label'])}</rdf:li></rdf:Bag></dc:subject>"
        packet = ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
                  '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
                  f'<rdf:Description rdf:about="" xmlns:appliance={quoteattr(XMP_NAMESPACE)} '
                  f'xmlns:dc="http://purl.org/dc/elements/1.1/">{properties}</rdf:Description>'
                  '</rdf:RDF></x:xmpmeta><?xpacket end="r"?>').encode()
        if len(XMP_HEADER) + len(packet) > MAX_SEGMENT_BYTES:
            log.warning("a keep of %.60s has no XMP: its %d bytes do not fit a JPEG segment", record["label"], len(packet))
            return b""
        return packet


def local_time(captured_at: str, zone_name: str) -> tuple[datetime, str, str]:
    """A record's UTC ``captured_at`` in the zone: the local time, its fraction of a second as EXIF
    writes it (``"123"``; "" if none) and its UTC offset (``"+02:00"``)."""
    moment = datetime.fromisoformat(captured_at.replace("Z", "+00:00")).astimezone(_zone(zone_name))
    fraction = captured_at.rstrip("Z").partition(".")[2]
    minutes = round(moment.utcoffset().total_seconds() / 60)
    sign = "-" if minutes < 0 else "+"
    return moment, fraction, f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


@functools.cache
def _zone(name: str):
    """The tz database's zone, or UTC (said once) if this system has no such zone: the offset written
    beside each time keeps it right either way."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("time zone %r is not in this system's tz database: kept JPEGs carry UTC times", name)
        return timezone.utc


def degrees_minutes_seconds(value: float) -> tuple:
    """``abs(value)`` degrees as EXIF's three rationals: whole degrees, whole minutes, seconds to 1/10000."""
    from PIL.TiffImagePlugin import IFDRational

    parts = round(abs(value) * 3600 * _ARCSEC_PARTS)  # one rounding, in whole parts: no 60" to carry
    degrees, rest = divmod(parts, 3600 * _ARCSEC_PARTS)
    minutes, seconds = divmod(rest, 60 * _ARCSEC_PARTS)
    return IFDRational(degrees, 1), IFDRational(minutes, 1), IFDRational(seconds, _ARCSEC_PARTS)


def _decimal(score) -> str:
    """A score to 6 places without an exponent: ``0.742188``, ``0.000012``, ``1``."""
    return f"{float(score):.6f}".rstrip("0").rstrip(".")


def _xml_text(value) -> str:
    """``value`` as XML character data: escaped, without the characters XML 1.0 cannot carry (control
    characters, lone surrogates, U+FFFE and U+FFFF)."""
    return escape("".join(c for c in str(value) if c in "\t\n\r" or " " <= c < "\ud800" or "\ue000" <= c < "\ufffe"
                          or c > "\uffff"))
