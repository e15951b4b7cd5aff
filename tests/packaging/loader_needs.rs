//! What a shipped binary asks of the dynamic loader of the host it runs on, and whether a
//! XenServer 8 / XCP-ng 8 dom0 (CentOS 7 based: glibc 2.17) has it.
//!
//! The loader refuses to start a program when a library in its `NEEDED` entries is missing,
//! or when a version in its version-needs section (`.gnu.version_r`, e.g. `GLIBC_2.34` of
//! `libc.so.6`) is not defined by that library. Both are read with binutils' `readelf`; the
//! undefined dynamic symbols name which function wants each version, for the message.
//! The RPM's automatic `Requires` (rpmbuild's ELF dependency generator) say the same things
//! in rpm's words, `libc.so.6(GLIBC_2.17)(64bit)`, and are checked by the same rules.

use std::fmt;
use std::path::Path;
use std::process::{Command, Stdio};

/// The newest glibc on the hosts the packages are for.
pub const GLIBC_FLOOR: GlibcVersion = GlibcVersion(2, 17, 0);

/// The shared libraries those hosts have for certain: glibc's own. No libssl, no dynamic
/// libstdc++ or libgcc_s (the build links Zig's unwinder statically).
pub const ALLOWED_LIBRARIES: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "ld-linux-x86-64.so.2",
];

/// A glibc symbol version, `GLIBC_2.3.4` as (2, 3, 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GlibcVersion(pub u32, pub u32, pub u32);

impl GlibcVersion {
    /// Parses a version name such as `GLIBC_2.17` or `GLIBC_2.2.5`; `None` for any other
    /// name (`GLIBC_PRIVATE`, `GCC_3.0`, …).
    pub fn parse(name: &str) -> Option<GlibcVersion> {
        let numbers = name.strip_prefix("GLIBC_")?;
        let mut parts = numbers.split('.').map(|part| part.parse::<u32>().ok());
        let major = parts.next()??;
        let minor = parts.next()??;
        let patch = parts.next().unwrap_or(Some(0))?;
        parts
            .next()
            .is_none()
            .then_some(GlibcVersion(major, minor, patch))
    }
}

impl fmt::Display for GlibcVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GlibcVersion(major, minor, 0) => write!(f, "GLIBC_{major}.{minor}"),
            GlibcVersion(major, minor, patch) => write!(f, "GLIBC_{major}.{minor}.{patch}"),
        }
    }
}

/// What one ELF binary needs from the loader.
#[derive(Debug, Default)]
pub struct LoaderNeeds {
    /// The `NEEDED` libraries, in order.
    pub libraries: Vec<String>,
    /// The version-needs section.
    pub versions: Vec<VersionNeed>,
    /// The undefined dynamic symbols with a version: (symbol, [`VersionNeed::index`]).
    pub symbols: Vec<(String, u32)>,
}

/// One entry of the version-needs section: `library` must define the version `name`.
#[derive(Debug, PartialEq)]
pub struct VersionNeed {
    /// e.g. `libc.so.6`.
    pub library: String,
    /// e.g. `GLIBC_2.17`.
    pub name: String,
    /// The index the binary's symbols refer to it by (two libraries may both have a
    /// `GLIBC_2.29`, e.g. libc and libm: the name alone does not tell whose it is).
    pub index: u32,
}

impl LoaderNeeds {
    /// Reads `binary` with `readelf`, failing the test if it cannot.
    pub fn read(binary: &Path) -> LoaderNeeds {
        LoaderNeeds {
            libraries: needed_libraries(&readelf(binary, &["--dynamic"])),
            versions: version_needs(&readelf(binary, &["--version-info"])),
            symbols: versioned_undefined_symbols(&readelf(binary, &["--dyn-syms"])),
        }
    }

    /// One line per thing a glibc-2.17 host lacks: a library not in [`ALLOWED_LIBRARIES`],
    /// a version newer than [`GLIBC_FLOOR`] or not a glibc version at all, each with the
    /// symbols that want it. Empty if the binary loads there.
    pub fn problems(&self) -> Vec<String> {
        let mut problems: Vec<String> = self
            .libraries
            .iter()
            .filter(|library| !ALLOWED_LIBRARIES.contains(&library.as_str()))
            .map(|library| format!("needs the library {library}, which is not glibc's"))
            .collect();
        for VersionNeed {
            library,
            name: version,
            index,
        } in &self.versions
        {
            let why = match GlibcVersion::parse(version) {
                Some(parsed) if parsed <= GLIBC_FLOOR => continue,
                Some(_) => format!("newer than {GLIBC_FLOOR}"),
                None => "not a public glibc version".to_owned(),
            };
            let wanting: Vec<&str> = self
                .symbols
                .iter()
                .filter(|(_, wanted)| wanted == index)
                .map(|(symbol, _)| symbol.as_str())
                .collect();
            problems.push(format!(
                "needs {version} of {library} ({why}), for: {}",
                if wanting.is_empty() {
                    "no symbol named".to_owned()
                } else {
                    wanting.join(", ")
                }
            ));
        }
        problems
    }
}

/// Runs `readelf --wide ARGS binary`, failing the test unless it succeeds.
fn readelf(binary: &Path, args: &[&str]) -> String {
    let output = Command::new("readelf")
        .arg("--wide")
        .args(args)
        .arg(binary)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("cannot run readelf (binutils): {error}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stderr.is_empty(),
        "readelf {args:?} {}: {stderr}",
        binary.display()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The libraries of `readelf --dynamic`'s lines `(NEEDED) Shared library: [libc.so.6]`.
fn needed_libraries(dynamic: &str) -> Vec<String> {
    dynamic
        .lines()
        .filter(|line| line.contains("(NEEDED)"))
        .map(|line| {
            let library = line
                .split_once("Shared library: [")
                .and_then(|(_, rest)| rest.strip_suffix(']'))
                .unwrap_or_else(|| panic!("unexpected NEEDED line of readelf: {line}"));
            library.to_owned()
        })
        .collect()
}

/// The entries of `readelf --version-info`'s version-needs section:
///
/// ```text
/// Version needs section '.gnu.version_r' contains 2 entries:
///  Addr: 0x…  Offset: 0x…  Link: 8 (.dynstr)
///   000000: Version: 1  File: libc.so.6  Cnt: 2
///   0x0060:   Name: GLIBC_2.2.5  Flags: none  Version: 2
/// ```
fn version_needs(version_info: &str) -> Vec<VersionNeed> {
    let mut needs = Vec::new();
    let mut in_section = false;
    let mut file: Option<&str> = None;
    for line in version_info.lines().map(str::trim_start) {
        if line.starts_with("Version ") {
            in_section = line.starts_with("Version needs section");
            file = None;
        } else if in_section {
            if let Some(rest) = line.split_once("File: ").map(|(_, rest)| rest) {
                file = rest.split_whitespace().next();
            } else if let Some(rest) = line.split_once("Name: ").map(|(_, rest)| rest) {
                let unexpected = || -> ! { panic!("unexpected version need of readelf: {line}") };
                let name = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_else(|| unexpected());
                let index = rest
                    .split_once("Version: ")
                    .and_then(|(_, index)| index.trim().parse().ok())
                    .unwrap_or_else(|| unexpected());
                needs.push(VersionNeed {
                    library: file.unwrap_or_else(|| unexpected()).to_owned(),
                    name: name.to_owned(),
                    index,
                });
            }
        }
    }
    needs
}

/// The (symbol, version index) pairs of `readelf --dyn-syms`'s undefined symbols with a
/// version: `1: 0000000000000000 0 FUNC GLOBAL DEFAULT UND memcpy@GLIBC_2.14 (3)`.
fn versioned_undefined_symbols(dyn_syms: &str) -> Vec<(String, u32)> {
    dyn_syms
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [_, _, _, _, _, _, "UND", name, rest @ ..] = fields.as_slice() else {
                return None;
            };
            let (symbol, _) = name.split_once('@')?;
            let index = rest
                .first()
                .and_then(|index| index.strip_prefix('(')?.strip_suffix(')')?.parse().ok())
                .unwrap_or_else(|| panic!("a versioned symbol without its index: {line}"));
            Some((symbol.to_owned(), index))
        })
        .collect()
}

/// One line per requirement of an RPM (`rpm -qp --requires`) that a glibc-2.17 host may
/// not meet: a library other than [`ALLOWED_LIBRARIES`], a glibc version newer than
/// [`GLIBC_FLOOR`], or anything else than the shell of the scriptlets, rpm's own features,
/// the loader's `.gnu.hash` support and the package's config.
pub fn rpm_requirement_problems(requires: &str) -> Vec<String> {
    requires
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .filter_map(|requirement| {
            let why = rpm_requirement_problem(requirement)?;
            Some(format!("the RPM requires {requirement}: {why}"))
        })
        .collect()
}

/// Why a glibc-2.17 host may not meet `requirement`, if it may not.
fn rpm_requirement_problem(requirement: &str) -> Option<String> {
    // rtld(GNU_HASH): the loader reads .gnu.hash, as glibc's has since 2.5 (glibc's
    // package provides it, on EL5 and later).
    if requirement == "/bin/sh"
        || requirement == "rtld(GNU_HASH)"
        || requirement.starts_with("rpmlib(")
        || requirement.starts_with("config(")
    {
        return None;
    }
    // Library requirements: `libc.so.6()(64bit)`, `libc.so.6(GLIBC_2.17)(64bit)`.
    let Some((library, rest)) = requirement.split_once('(') else {
        return Some("not a library of glibc's".to_owned());
    };
    if !ALLOWED_LIBRARIES.contains(&library) {
        return Some(format!("{library} is not a library of glibc's"));
    }
    let Some((version, _)) = rest.split_once(')') else {
        return Some("not in rpm's form LIBRARY(VERSION)(64bit)".to_owned());
    };
    if version.is_empty() {
        return None;
    }
    match GlibcVersion::parse(version) {
        Some(parsed) if parsed <= GLIBC_FLOOR => None,
        Some(_) => Some(format!("newer than {GLIBC_FLOOR}")),
        None => Some(format!("{version} is not a public glibc version")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_versions_compare_by_number() {
        assert_eq!(
            GlibcVersion::parse("GLIBC_2.2.5"),
            Some(GlibcVersion(2, 2, 5))
        );
        assert!(GlibcVersion::parse("GLIBC_2.17") == Some(GLIBC_FLOOR));
        assert!(GlibcVersion::parse("GLIBC_2.9").unwrap() < GLIBC_FLOOR);
        assert!(GlibcVersion::parse("GLIBC_2.18").unwrap() > GLIBC_FLOOR);
        assert_eq!(GlibcVersion::parse("GLIBC_PRIVATE"), None);
        assert_eq!(GlibcVersion::parse("GCC_3.0"), None);
        assert_eq!(GlibcVersion(2, 34, 0).to_string(), "GLIBC_2.34");
    }

    /// Lines as readelf 2.40 prints them for a binary linked against glibc 2.36 (indented
    /// here; readelf's own indentation does not matter to the parsers).
    #[test]
    fn readelf_output_is_read_and_judged() {
        let dynamic = "
            0x0000000000000001 (NEEDED)             Shared library: [libgcc_s.so.1]
            0x0000000000000001 (NEEDED)             Shared library: [libc.so.6]
            0x000000000000000c (INIT)               0x6000";
        let version_info = "
            Version symbols section '.gnu.version' contains 3 entries:
             Addr: 0x0000000000000e5c  Offset: 0x00000e5c  Link: 5 (.dynsym)
              000:   0 (*local*)       2 (GLIBC_2.2.5)   3 (GCC_3.0)

            Version needs section '.gnu.version_r' contains 3 entries:
             Addr: 0x0000000000000ee8  Offset: 0x00000ee8  Link: 8 (.dynstr)
              000000: Version: 1  File: libgcc_s.so.1  Cnt: 1
              0x0020:   Name: GCC_3.0  Flags: none  Version: 3
              0x0010: Version: 1  File: libc.so.6  Cnt: 3
              0x0030:   Name: GLIBC_2.2.5  Flags: none  Version: 2
              0x0040:   Name: GLIBC_2.34  Flags: none  Version: 4
              0x0050:   Name: GLIBC_2.17  Flags: none  Version: 5
              0x0060:   Name: GLIBC_2.29  Flags: none  Version: 6
              0x0030: Version: 1  File: libm.so.6  Cnt: 1
              0x0070:   Name: GLIBC_2.29  Flags: none  Version: 7";
        let dyn_syms = "
            Symbol table '.dynsym' contains 9 entries:
               Num:    Value          Size Type    Bind   Vis      Ndx Name
                 0: 0000000000000000     0 NOTYPE  LOCAL  DEFAULT  UND
                 1: 0000000000000000     0 FUNC    GLOBAL DEFAULT  UND __libc_start_main@GLIBC_2.34 (4)
                 2: 0000000000000000     0 FUNC    GLOBAL DEFAULT  UND _Unwind_Resume@GCC_3.0 (3)
                 3: 0000000000000000     0 FUNC    GLOBAL DEFAULT  UND pthread_create@GLIBC_2.34 (4)
                 4: 0000000000000000     0 FUNC    GLOBAL DEFAULT  UND clock_gettime@GLIBC_2.17 (5)
                 5: 0000000000000000     0 FUNC    GLOBAL DEFAULT  UND close@GLIBC_2.2.5 (2)
                 6: 0000000000004010     8 OBJECT  GLOBAL DEFAULT   25 environ@@GLIBC_2.2.5
                 7: 0000000000000000     0 FUNC    GLOBAL DEFAULT  UND pow@GLIBC_2.29 (7)
                 8: 0000000000000000     0 FUNC    GLOBAL DEFAULT  UND posix_spawn_file_actions_addchdir_np@GLIBC_2.29 (6)";
        let needs = LoaderNeeds {
            libraries: needed_libraries(dynamic),
            versions: version_needs(version_info),
            symbols: versioned_undefined_symbols(dyn_syms),
        };
        assert_eq!(needs.libraries, ["libgcc_s.so.1", "libc.so.6"]);
        assert_eq!(
            needs.versions[1],
            VersionNeed {
                library: "libc.so.6".to_owned(),
                name: "GLIBC_2.2.5".to_owned(),
                index: 2
            }
        );
        assert_eq!(needs.versions.len(), 6, "{:?}", needs.versions);
        assert_eq!(
            needs.symbols.len(),
            7,
            "undefined ones only: {:?}",
            needs.symbols
        );
        assert_eq!(
            needs.problems(),
            [
                "needs the library libgcc_s.so.1, which is not glibc's",
                "needs GCC_3.0 of libgcc_s.so.1 (not a public glibc version), for: _Unwind_Resume",
                "needs GLIBC_2.34 of libc.so.6 (newer than GLIBC_2.17), for: __libc_start_main, pthread_create",
                "needs GLIBC_2.29 of libc.so.6 (newer than GLIBC_2.17), for: posix_spawn_file_actions_addchdir_np",
                "needs GLIBC_2.29 of libm.so.6 (newer than GLIBC_2.17), for: pow",
            ]
        );
    }

    #[test]
    fn rpm_requirements_past_the_floor_are_named() {
        let requires = "/bin/sh\nconfig(message-switch-rs) = 0.1.0-1\n\
            libc.so.6()(64bit)\nlibc.so.6(GLIBC_2.17)(64bit)\nlibc.so.6(GLIBC_2.34)(64bit)\n\
            libgcc_s.so.1()(64bit)\nlibssl.so.3()(64bit)\nrpmlib(FileDigests) <= 4.6.0-1\nrtld(GNU_HASH)\nlibc.so.6(GLIBC_2.17\n";
        assert_eq!(
            rpm_requirement_problems(requires),
            [
                "the RPM requires libc.so.6(GLIBC_2.34)(64bit): newer than GLIBC_2.17",
                "the RPM requires libgcc_s.so.1()(64bit): libgcc_s.so.1 is not a library of glibc's",
                "the RPM requires libssl.so.3()(64bit): libssl.so.3 is not a library of glibc's",
                "the RPM requires libc.so.6(GLIBC_2.17: not in rpm's form LIBRARY(VERSION)(64bit)",
            ]
        );
    }
}
