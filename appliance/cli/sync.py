"""``appliance sync``: pull the kept images off an appliance onto this computer."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from appliance.cli import add_command
from appliance.errors import PasswordMissing
from appliance.transfer.sync import MAX_LIMIT, sync

PASSWORD_VARIABLE = "APPLIANCE_PASSWORD"


def register(subparsers):
    parser = add_command(subparsers, "sync", sync_command)
    parser.add_argument("url", metavar="URL", help="the appliance's page, e.g. http://appliance.local/")
    parser.add_argument("dest", metavar="DEST", type=Path, help="the folder to pull into (made if missing)")
    parser.add_argument("--password-file", type=Path, default=None, metavar="FILE",
                        help=f"a file holding the appliance's web password (default: ${PASSWORD_VARIABLE}, "
                             "else you are asked)")
    parser.add_argument("--limit", type=_page_size, default=100, metavar="N",
                        help=f"captures per request, 1-{MAX_LIMIT} (default: 100)")


def sync_command(args) -> int:
    """Pull the kept images off an appliance into a folder, verified, resuming where the last run stopped.

    Images land in DEST/<label>/<YYYY-MM-DD>_<file>.jpg (audit keeps in DEST/_audit/), listed in
    DEST/manifest.csv and manifest.jsonl. Each file is installed only if its sha256 is the device's;
    the device then marks it synced, so its retention may free it. A correction made on the device
    since an image was synced moves its file to its new folder and rewrites its manifest rows. An
    interrupted run resumes where it stopped. The password is read from --password-file, else
    $APPLIANCE_PASSWORD, else asked for.

    Exit status: 0 when every image verified; 1 when some did not (they are listed; run again to
    retry them); 2 on an error such as a wrong password or an unreachable appliance.

    Example:
        appliance sync http://appliance.local/ ~/birds --password-file ~/.appliance-password
    """
    password = read_password(args.password_file, args.url)
    report = sync(args.url, args.dest, password, limit=args.limit, progress=_print_progress)
    for capture_id, reason in report.failed:
        print(f"appliance: capture {capture_id} failed: {reason}", file=sys.stderr)
    print(f"synced {report.url} into {report.dest}: {report.new} new, {report.skipped} skipped, "
          f"{report.updated} updated, {len(report.failed)} failed, {report.bytes / 1e6:.1f} MB "
          f"in {report.seconds:.1f} s "
          f"({report.mb_per_s:.1f} MB/s)")
    if report.failed:
        print("appliance: some images did not verify and were not kept: run the same command again to retry",
              file=sys.stderr)
        return 1
    return 0


def read_password(password_file: Path | None, url: str, environ=os.environ, stdin=sys.stdin) -> str:
    """The password from ``password_file``, else ``$APPLIANCE_PASSWORD``, else a prompt on a terminal."""
    if password_file is not None:
        try:
            password = password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as e:
            raise PasswordMissing(f"--password-file {password_file}: cannot read it ({e})") from None
        if not password:
            raise PasswordMissing(f"--password-file {password_file} is empty: put the appliance's web password in it")
        return password
    if environ.get(PASSWORD_VARIABLE):
        return environ[PASSWORD_VARIABLE]
    if stdin is not None and stdin.isatty():
        return getpass.getpass(f"password for {url}: ")
    raise PasswordMissing(f"no password for {url}: give the appliance's web password with --password-file FILE "
                          f"or ${PASSWORD_VARIABLE}, or run in a terminal to be asked")


def _page_size(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_LIMIT}")
    return int(value)


def _print_progress(report) -> None:
    print(f"page {report.pages}: {report.new} new, {report.skipped} skipped, {report.updated} updated, "
          f"{len(report.failed)} failed so far, {report.bytes / 1e6:.1f} MB (up to capture {report.cursor})",
          file=sys.stderr, flush=True)
