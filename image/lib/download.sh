# Downloads into the cache, verified: resumable, written under a .partial name until the sha256 matches.
# shellcheck shell=bash

# fetch_verified URL SHA256 OUT: OUT exists afterwards only if its sha256 is SHA256.
fetch_verified() {
    local url="$1" sha256="$2" out="$3"
    [ -n "$sha256" ] || die "no sha256 is pinned for $url, so the download cannot be verified; pass the one the publisher gives (see --help)"
    [[ "$sha256" =~ ^[0-9a-fA-F]{64}$ ]] || die "'$sha256' is not a sha256 (64 hex digits)"
    if [ -f "$out" ]; then
        if echo "${sha256,,}  $out" | sha256sum --check --status; then
            say "$(basename "$out"): in the cache, sha256 ok"
            return 0
        fi
        warn "$out does not match its sha256; fetching it again"
        rm -f "$out"
    fi
    mkdir -p "$(dirname "$out")"
    say "downloading $url"
    # -C - resumes an interrupted download from the .partial file.
    local status=0
    curl -fL --retry 3 --retry-delay 2 --connect-timeout 20 -C - -o "$out.partial" "$url" || status=$?
    [ "$status" -eq 0 ] ||
        die "download of $url was interrupted or refused (curl exit $status); what arrived is kept in $out.partial and the next run resumes it"
    local got
    got=$(sha256sum "$out.partial" | cut -d' ' -f1)
    if [ "$got" != "${sha256,,}" ]; then
        mv -f "$out.partial" "$out.bad"
        die "$url: sha256 mismatch: expected ${sha256,,}, got $got. The file (kept as $out.bad) is corrupt or was changed upstream; nothing was built from it"
    fi
    mv "$out.partial" "$out"
}
