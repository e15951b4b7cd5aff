#!/usr/bin/env bash
# Builds the packages of message-switch-rs into target/packages/:
#   message-switch-rs_VERSION-1_ARCH.deb   (cargo deb, [package.metadata.deb] in Cargo.toml)
#   message-switch-rs-VERSION-1.ARCH.rpm   (rpmbuild, packaging/message-switch-rs.spec)
#
# usage: packaging/build-packages.sh [deb] [rpm]      (no argument: both)
#
# Both are made from the same staged files in target/packages/stage/: the release binaries
# (stripped copies; target/release keeps its debug info for profiling), the man pages and
# the shell completions written by `message-switch-assets` from the clap definitions.
# cargo-deb is installed with `cargo install --locked` if missing; the RPM needs rpmbuild
# (Debian: apt-get install rpm; Fedora/CentOS: rpm-build).
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

for format in "${formats[@]}"; do
    case "$format" in
        deb)
            if ! command -v cargo-deb >/dev/null 2>&1; then
                echo "== installing cargo-deb"
                cargo install --locked cargo-deb
            fi
            ;;
        rpm)
            if ! command -v rpmbuild >/dev/null 2>&1; then
                echo "build-packages.sh: the RPM needs rpmbuild (apt-get install rpm, or dnf install rpm-build)" >&2
                exit 1
            fi
            ;;
    esac
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
            echo "== rpmbuild"
            version=$(cargo metadata --no-deps --format-version 1 --offline |
                sed -n 's/.*"name":"message-switch","version":"\([^"]*\)".*/\1/p')
            top="$PWD/target/packages/rpmbuild"
            rm -rf "$top"
            rpmbuild -bb --quiet \
                --define "_topdir $top" \
                --define "_rpmdir $PWD/target/packages" \
                --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
                --define "version $version" \
                --define "repo $PWD" \
                --define "stage $PWD/$stage" \
                packaging/message-switch-rs.spec
            rm -rf "$top"
            ;;
    esac
done
ls -l target/packages/*.deb target/packages/*.rpm 2>/dev/null || true
