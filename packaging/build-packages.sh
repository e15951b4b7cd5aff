#!/usr/bin/env bash
# Builds the packages of message-switch-rs into target/packages/:
#   message-switch-rs_VERSION-1_ARCH.deb   (cargo deb, [package.metadata.deb] in Cargo.toml)
#   message-switch-rs-VERSION-1.ARCH.rpm   (rpmbuild, packaging/message-switch-rs.spec)
#
# usage: packaging/build-packages.sh [deb] [rpm]      (no argument: both)
#
# Both are made from the same staged files in target/packages/stage/: the binaries of the
# `dist` profile (Cargo.toml: `release` with fat LTO and one codegen unit; stripped copies),
# the man pages and the shell completions written by `message-switch-assets` from the clap
# definitions.
#
# The binaries must load on the hosts the switch replaces: a XenServer 8 / XCP-ng 8 dom0 has
# glibc 2.17 (CentOS 7). They are linked by Zig against glibc 2.17's symbol versions
# (`cargo zigbuild --target x86_64-unknown-linux-gnu.2.17`, with the machine's own Rust
# toolchain), into target/x86_64-unknown-linux-gnu/dist, so the host build in
# target/release is left as it is. Zig links its own unwinder statically: the binaries need
# only libc, libm, libpthread, libdl and ld-linux (tests/packaging.rs checks both).
#
# Tools, installed if missing: cargo-zigbuild and Zig, from PyPI at pinned versions into a
# virtual environment in target/packaging-tools/ (about 8 s: both are prebuilt wheels);
# cargo-deb with `cargo install --locked`. The RPM needs rpmbuild (Debian: apt-get install
# rpm; Fedora/CentOS: rpm-build).
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

# The glibc the binaries are linked against: that of the oldest host they must load on.
glibc_floor=2.17
rust_target=x86_64-unknown-linux-gnu
zigbuild_version=0.24.0
zig_version=0.17.1
target_dir=$(realpath -m "${CARGO_TARGET_DIR:-target}")
tools="$target_dir/packaging-tools"

# cargo-zigbuild and Zig, reused when the pinned versions are there already.
if ! [ "$("$tools/bin/cargo-zigbuild" --version 2>/dev/null)" = "cargo-zigbuild $zigbuild_version" ] ||
    ! [ "$("$tools/bin/python3" -m ziglang version 2>/dev/null)" = "$zig_version" ]; then
    echo "== installing cargo-zigbuild $zigbuild_version and Zig $zig_version (PyPI) into $tools"
    rm -rf "$tools"
    if ! python3 -m venv "$tools"; then
        echo "build-packages.sh: cannot make a Python virtual environment for Zig (Debian: apt-get install python3-venv)" >&2
        exit 1
    fi
    "$tools/bin/python3" -m pip install --quiet --disable-pip-version-check \
        "cargo-zigbuild==$zigbuild_version" "ziglang==$zig_version"
fi
if command -v rustup >/dev/null 2>&1 &&
    ! rustup target list --installed | grep -qx "$rust_target"; then
    rustup target add "$rust_target"
fi

echo "== dist build (glibc $glibc_floor)"
# The pinned Zig, not whichever `zig` may be on PATH.
zig=$("$tools/bin/python3" -c 'import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))')
PATH="$tools/bin:$PATH" CARGO_ZIGBUILD_ZIG_PATH="$zig" cargo zigbuild --profile dist --locked --target "$rust_target.$glibc_floor" \
    --bin message-switch --bin message-cli --bin message-switch-assets
built="$target_dir/$rust_target/dist"

stage=target/packages/stage
rm -rf "$stage"
mkdir -p "$stage"
for binary in message-switch message-cli; do
    strip --strip-debug -o "$stage/$binary" "$built/$binary"
done
# The man pages' date: SOURCE_DATE_EPOCH (reproducible builds) if set, else the date of the
# last commit, so that the same source gives the same pages.
if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
    date=$(date -u -d "@$SOURCE_DATE_EPOCH" +%F)
else
    date=$(git log -1 --format=%cs 2>/dev/null || date -u +%F)
fi
"$built/message-switch-assets" --date "$date" "$stage"
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
