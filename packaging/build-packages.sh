#!/usr/bin/env bash
# Builds the packages of message-switch-rs into target/packages/:
#   message-switch-rs_VERSION-1_ARCH.deb   (cargo deb,          [package.metadata.deb])
#   message-switch-rs-VERSION-1.ARCH.rpm   (cargo generate-rpm, [package.metadata.generate-rpm])
#
# usage: packaging/build-packages.sh [deb] [rpm]      (no argument: both)
#
# Both are made from the same staged files in target/packages/stage/: the release binaries
# (stripped copies; target/release keeps its debug info for profiling), the man pages and
# the shell completions written by `message-switch-assets` from the clap definitions.
# cargo-deb and cargo-generate-rpm are installed with `cargo install --locked` if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

formats=("$@")
if [ ${#formats[@]} -eq 0 ]; then
    formats=(deb rpm)
fi
for format in "${formats[@]}"; do
    case "$format" in
        deb | rpm) ;;
        *) echo "build-packages.sh: unknown package format '$format' (deb or rpm)" >&2; exit 2 ;;
    esac
done

# The cargo subcommand that builds one format.
tool_of() {
    case "$1" in
        deb) echo cargo-deb ;;
        rpm) echo cargo-generate-rpm ;;
    esac
}

for format in "${formats[@]}"; do
    tool=$(tool_of "$format")
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "== installing $tool"
        cargo install --locked "$tool"
    fi
done

echo "== release build"
cargo build --release --locked --bin message-switch --bin message-cli --bin message-switch-assets
release="${CARGO_TARGET_DIR:-target}/release"

stage=target/packages/stage
rm -rf "$stage"
mkdir -p "$stage"
for binary in message-switch message-cli; do
    strip --strip-debug -o "$stage/$binary" "$release/$binary"
done
# The man pages' date: SOURCE_DATE_EPOCH (reproducible builds) if set, else the date of the
# last commit, so that the same source gives the same pages.
if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
    date=$(date -u -d "@$SOURCE_DATE_EPOCH" +%F)
else
    date=$(git log -1 --format=%cs 2>/dev/null || date -u +%F)
fi
"$release/message-switch-assets" --date "$date" "$stage"
# Man pages are installed compressed (Debian policy; rpmbuild would do the same). -n keeps
# the output reproducible (no name or time stamp in the header).
gzip -9nf "$stage"/man/*.8

for format in "${formats[@]}"; do
    case "$format" in
        deb)
            echo "== cargo deb"
            cargo deb --no-build --no-strip --output target/packages/
            ;;
        rpm)
            echo "== cargo generate-rpm"
            cargo generate-rpm --output target/packages/
            ;;
    esac
done
ls -l target/packages/*.deb target/packages/*.rpm 2>/dev/null || true
