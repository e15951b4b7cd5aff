//! `message-switch-assets --date YYYY-MM-DD OUT_DIR`: writes the man pages and shell
//! completions of `message-switch` and `message-cli` for the packages
//! (packaging/build-packages.sh).
//!
//! Both are generated from the clap definitions the binaries parse
//! ([`message_switch::cli`]), so they cannot drift from `--help`. This tool is built with the
//! crate but not installed by the packages. It writes:
//!
//! ```text
//! OUT_DIR/man/message-switch.8, OUT_DIR/man/message-cli.8,
//! OUT_DIR/man/message-cli-SUBCOMMAND.8 (one page per subcommand, as git does)
//! OUT_DIR/completions/bash/{message-switch,message-cli}
//! OUT_DIR/completions/zsh/{_message-switch,_message-cli}
//! OUT_DIR/completions/fish/{message-switch,message-cli}.fish
//! ```
//!
//! Existing files are replaced; directories are created as needed. The date goes into the
//! pages' title line; the build script passes the date of the last commit, so that the same
//! source gives the same pages.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Parser;
use clap_complete::Shell;

use message_switch::cli;

/// Both commands live in /usr/sbin (where the original put them), so their pages are in
/// section 8, system administration.
const MAN_SECTION: &str = "8";

/// Writes the man pages and shell completions of message-switch and message-cli.
#[derive(Parser, Debug)]
#[command(name = "message-switch-assets", version)]
struct Args {
    /// The date printed in the man pages' title line.
    #[arg(long, value_name = "YYYY-MM-DD")]
    date: String,

    /// Where to write man/ and completions/.
    #[arg(value_name = "OUT_DIR")]
    out_dir: PathBuf,
}

/// A section of a man page that the clap definitions cannot give.
struct ExtraSection {
    heading: &'static str,
    /// (term, text) paragraphs; the text may be empty.
    entries: &'static [(&'static str, &'static str)],
}

/// What `message-switch(8)` says beyond its options.
const SWITCH_SECTIONS: &[ExtraSection] = &[
    ExtraSection {
        heading: "ENVIRONMENT",
        entries: &[
            ("RUST_LOG", "Which log lines to write to stderr (default info), e.g. message_switch=debug."),
            ("NOTIFY_SOCKET", "Set by systemd for Type=notify: the switch sends READY=1 once recovery has finished and every listener accepts, STOPPING=1 when a graceful shutdown begins, and STATUS= lines."),
            ("LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES", "Set by systemd for socket activation (message-switch.socket): the switch serves the listening sockets it is passed instead of binding its own."),
        ],
    },
    ExtraSection {
        heading: "FILES",
        entries: &[
            ("/etc/message-switch.conf", "The configuration, read with --config: the original's s-expression record (path, pidfile, statedir), and any long option as a field of the same name. A flag overrides the file."),
            ("/var/run/message-switch/sock", "The Unix socket the toolstack's services connect to."),
            ("/usr/lib/systemd/system/message-switch.service, message-switch.socket", "The systemd units."),
            ("/usr/share/doc/message-switch-rs/deploy.md", "Installing on a host in place of the original, rolling back, and what differs."),
        ],
    },
    ExtraSection {
        heading: "SIGNALS",
        entries: &[("SIGTERM, SIGINT", "Graceful shutdown: stop accepting, answer what is in flight, make the journal durable, exit 0.")],
    },
    ExtraSection {
        heading: "SEE ALSO",
        entries: &[("message-cli(8), systemd.socket(5), sd_notify(3)", "")],
    },
];

/// What `message-cli(8)` says beyond its options.
const CLI_SECTIONS: &[ExtraSection] = &[
    ExtraSection {
        heading: "ENVIRONMENT",
        entries: &[
            (
                "MESSAGE_SWITCH_PATH, MESSAGE_SWITCH_ADDR",
                "The switch to use when neither --path nor --addr is given.",
            ),
            ("RUST_LOG", "Which log lines to write to stderr."),
        ],
    },
    ExtraSection {
        heading: "FILES",
        entries: &[(
            "/var/run/message-switch/sock",
            "The switch's Unix socket, used by default when it exists.",
        )],
    },
    ExtraSection {
        heading: "SEE ALSO",
        entries: &[("message-switch(8)", "")],
    },
];

fn main() -> Result<()> {
    let args = Args::parse();
    let man_dir = args.out_dir.join("man");
    write_man_pages(
        cli::switch::command(),
        SWITCH_SECTIONS,
        &args.date,
        &man_dir,
    )?;
    write_man_pages(
        cli::message_cli::command(),
        CLI_SECTIONS,
        &args.date,
        &man_dir,
    )?;
    for command in [cli::switch::command(), cli::message_cli::command()] {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let dir = args.out_dir.join("completions").join(shell.to_string());
            write_completion(command.clone(), shell, &dir)?;
        }
    }
    Ok(())
}

/// Writes `dir/NAME.8` for `command` (with `extra` sections after its options) and
/// `dir/NAME-SUBCOMMAND.8` for each of its subcommands, which its page refers to.
fn write_man_pages(
    command: clap::Command,
    extra: &[ExtraSection],
    date: &str,
    dir: &Path,
) -> Result<()> {
    // Building gives each subcommand its display name ("message-cli-list"), which names its
    // page; the help subcommand has no page.
    let mut command = command.disable_help_subcommand(true);
    command.build();
    for subcommand in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_man_page(subcommand, &[], date, dir)?;
    }
    write_man_page(&command, extra, date, dir)
}

fn write_man_page(
    command: &clap::Command,
    extra: &[ExtraSection],
    date: &str,
    dir: &Path,
) -> Result<()> {
    let man = clap_mangen::Man::new(command.clone())
        .section(MAN_SECTION)
        .date(date)
        .manual("System Administration")
        .source(format!("message-switch-rs {}", env!("CARGO_PKG_VERSION")));
    let name = man.get_filename();
    let mut page = Vec::new();
    render_man_page(&man, command, extra, &mut page)
        .with_context(|| format!("cannot render the man page {name}"))?;
    write_file(&dir.join(name), &page)
}

/// clap_mangen's page (the sections its `render` writes) with `extra` inserted before the
/// VERSION section.
fn render_man_page(
    man: &clap_mangen::Man,
    command: &clap::Command,
    extra: &[ExtraSection],
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    if command.has_subcommands() {
        man.render_subcommands_section(out)?;
    }
    if command.get_after_long_help().is_some() || command.get_after_help().is_some() {
        man.render_extra_section(out)?;
    }
    for section in extra {
        out.extend_from_slice(format!(".SH {}\n", roff_escape(section.heading)).as_bytes());
        for (term, text) in section.entries {
            out.extend_from_slice(format!(".TP\n\\fB{}\\fR\n", roff_escape(term)).as_bytes());
            if !text.is_empty() {
                out.extend_from_slice(format!("{}\n", roff_escape(text)).as_bytes());
            }
        }
    }
    man.render_version_section(out)
}

/// Text as one roff text line: backslashes and dashes escaped (a plain `-` may be printed
/// as a hyphen, which cannot be copied into a shell), and a leading `.` or `'` kept from
/// being read as a request.
fn roff_escape(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with(['.', '\'']) {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// Writes the completion script of `command` for `shell` into `dir`, under the file name
/// that shell loads it by (e.g. `_message-cli` for zsh).
fn write_completion(mut command: clap::Command, shell: Shell, dir: &Path) -> Result<()> {
    let name = command.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, &name, &mut script);
    let file = match shell {
        Shell::Zsh => format!("_{name}"),
        Shell::Fish => format!("{name}.fish"),
        _ => name,
    };
    write_file(&dir.join(file), &script)
}

fn write_file(path: &Path, contents: &[u8]) -> Result<()> {
    let parent = path.parent().map(PathBuf::from).unwrap_or_default();
    fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))
}
