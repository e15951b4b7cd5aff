//! The config file of `message-switch --config FILE`, in the original's format, extended to
//! every command-line option.
//!
//! The original reads an s-expression record as OCaml's `ppx_sexp_conv` writes it:
//!
//! ```text
//! ((path /var/run/message-switch/sock) (pidfile ()) (configfile ()) (statedir ()))
//! ```
//!
//! An option field is `(field ())` for none and `(field (value))` or `(field value)` for a
//! value; a field may be left out. Here every long option of the command is a field, so the
//! field list cannot drift from the options: the fields are found by walking the
//! `clap::Command` ([`merge`]). A flag takes `true` or `false`; a repeatable option takes one
//! value or a list, `(listen (127.0.0.1:8080 [::1]:8080))`. Field names are the long options'
//! names; `_` may be written for `-` (OCaml record fields use `_`).
//!
//! Two fields of the original's files are accepted and ignored: `configfile` (the path of
//! the file itself; following it would make the file an include mechanism the original never
//! had) and `daemonize` (`true`/`false`, still in the files of hosts installed before the
//! original dropped it for systemd; the switch never daemonizes, systemd supervises it).
//!
//! The file is turned into command-line arguments placed before the real ones, for the
//! options the command line does not give, so that a command-line option always overrides
//! the file and every value goes through the same clap parser as on the command line.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use clap::builder::Resettable;
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::sexp::{self, Position, Sexp, SyntaxError};

/// The original's field naming the file itself, accepted and ignored (see the module doc).
const CONFIGFILE_FIELD: &str = "configfile";

/// The original's former flag, accepted and ignored (see the module doc).
const DAEMONIZE_FIELD: &str = "daemonize";

/// Why a config file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("cannot read the config file {}: {error}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The reason (shown in the message, so not a `source` that would repeat it).
        error: io::Error,
    },
    /// The file is not a well-formed s-expression.
    #[error("{}:{error}", file.display())]
    Syntax {
        /// The file.
        file: PathBuf,
        /// Where and what.
        error: SyntaxError,
    },
    /// The s-expression is well formed but does not describe options.
    #[error("{}:{at}: {problem}", file.display())]
    Field {
        /// The file.
        file: PathBuf,
        /// Where the offending field or value starts.
        at: Position,
        /// What is wrong with it.
        problem: FieldProblem,
    },
}

/// What is wrong with a well-formed config file.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FieldProblem {
    /// The file is not exactly one list of fields.
    #[error("expected one record of fields, like ((path /var/run/message-switch/sock)); {0}")]
    NotARecord(&'static str),
    /// A field is not a `(name value)` list.
    #[error("expected a field (name value)")]
    NotAField,
    /// The field's name is not an option of the command.
    #[error("unknown field `{0}` (the fields are the long options of --help)")]
    Unknown(String),
    /// The field names an option that makes no sense in a file.
    #[error("field `{0}` cannot be set in a config file")]
    NotAllowed(String),
    /// The field appears twice.
    #[error("duplicate field `{name}` (first given at {first})")]
    Duplicate {
        /// The field.
        name: String,
        /// Where it was first given.
        first: Position,
    },
    /// The value has the wrong shape for the option.
    #[error("field `{name}` takes {expected}")]
    WrongKind {
        /// The field.
        name: String,
        /// What the option takes.
        expected: &'static str,
    },
    /// The option's parser rejects the value.
    #[error("field `{name}`: {reason}")]
    Invalid {
        /// The field.
        name: String,
        /// The parser's reason.
        reason: String,
    },
}

/// Returns `argv` with the fields of the config file named by the option `config_id` (if
/// `argv` gives one) inserted after the program name as arguments, for every option that
/// `argv` does not itself give on the command line.
///
/// `command` is the program's `clap::Command`; its long options are the file's fields. If
/// `argv` does not parse (a typo, `--help`, `--version`), it is returned unchanged so that
/// the caller's own parse reports it. Reading stops at the first problem, returned with the
/// file name, line and column; nothing else is opened.
pub fn merge(
    command: &Command,
    config_id: &str,
    argv: Vec<OsString>,
) -> Result<Vec<OsString>, ConfigError> {
    let relaxed = relaxed(command);
    let Ok(matches) = relaxed.clone().try_get_matches_from(&argv) else {
        return Ok(argv);
    };
    let Some(file) = matches
        .try_get_raw(config_id)
        .ok()
        .flatten()
        .and_then(|mut values| values.next())
        .map(PathBuf::from)
    else {
        return Ok(argv);
    };
    let text = std::fs::read_to_string(&file).map_err(|error| ConfigError::Read {
        file: file.clone(),
        error,
    })?;
    merge_matched(&relaxed, &matches, config_id, argv, &file, &text)
}

/// [`merge`] with the config file's contents already read: `text` stands for the file
/// `file` (which is only used in error messages), whatever file `argv` names.
pub fn merge_text(
    command: &Command,
    config_id: &str,
    argv: Vec<OsString>,
    file: &Path,
    text: &str,
) -> Result<Vec<OsString>, ConfigError> {
    let relaxed = relaxed(command);
    let Ok(matches) = relaxed.clone().try_get_matches_from(&argv) else {
        return Ok(argv);
    };
    merge_matched(&relaxed, &matches, config_id, argv, file, text)
}

/// The fields of `text` inserted into `argv`, whose options `matches` (parsed by the
/// `relaxed` command) already holds.
fn merge_matched(
    relaxed: &Command,
    matches: &ArgMatches,
    config_id: &str,
    argv: Vec<OsString>,
    file: &Path,
    text: &str,
) -> Result<Vec<OsString>, ConfigError> {
    let from_file = arguments(relaxed, config_id, matches, text).map_err(|error| match error {
        Problem::Syntax(error) => ConfigError::Syntax {
            file: file.to_path_buf(),
            error,
        },
        Problem::Field(at, problem) => ConfigError::Field {
            file: file.to_path_buf(),
            at,
            problem,
        },
    })?;
    let mut argv = argv.into_iter();
    let program = argv
        .next()
        .unwrap_or_else(|| OsString::from(relaxed.get_name()));
    Ok(std::iter::once(program)
        .chain(from_file)
        .chain(argv)
        .collect())
}

/// A problem found in the text, before the file name is attached.
enum Problem {
    Syntax(SyntaxError),
    Field(Position, FieldProblem),
}

/// The command without the relations between options (required, requires, conflicts), so
/// that a command line completed by the file can be parsed on its own, and one field's
/// value can be checked alone.
fn relaxed(command: &Command) -> Command {
    command.clone().mut_args(|arg| {
        arg.required(false)
            .requires(Resettable::Reset)
            .conflicts_with(Resettable::Reset)
            .required_unless_present(Resettable::Reset)
    })
}

/// The command-line arguments that the file's fields stand for, skipping the options that
/// `given` has from the command line.
fn arguments(
    command: &Command,
    config_id: &str,
    given: &ArgMatches,
    text: &str,
) -> Result<Vec<OsString>, Problem> {
    let tree = sexp::parse(text).map_err(Problem::Syntax)?;
    let mut seen: Vec<(String, Position)> = Vec::new();
    let mut arguments = Vec::new();
    for (name, at, value) in record(&tree)? {
        let canonical = name.replace('_', "-");
        if let Some((_, first)) = seen.iter().find(|(seen, _)| *seen == canonical) {
            let problem = FieldProblem::Duplicate {
                name: name.to_owned(),
                first: *first,
            };
            return Err(Problem::Field(at, problem));
        }
        seen.push((canonical.clone(), at));
        if canonical == CONFIGFILE_FIELD {
            one_value(name, value)?;
            continue;
        }
        if canonical == DAEMONIZE_FIELD {
            boolean(name, value)?;
            continue;
        }
        let arg = command
            .get_arguments()
            .find(|arg| arg.get_long() == Some(canonical.as_str()) && is_field(arg))
            .ok_or_else(|| Problem::Field(at, FieldProblem::Unknown(name.to_owned())))?;
        if arg.get_id() == config_id {
            return Err(Problem::Field(
                at,
                FieldProblem::NotAllowed(name.to_owned()),
            ));
        }
        let values = field_arguments(command, arg, name, value)?;
        if given.value_source(arg.get_id().as_str()) != Some(ValueSource::CommandLine) {
            arguments.extend(values);
        }
    }
    Ok(arguments)
}

/// An atom's text: [`sexp::parse`] only makes UTF-8 atoms, so nothing is ever lost here.
fn atom_text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

/// The fields of the one record in `tree`: name, position of the field, value.
fn record(tree: &[Sexp]) -> Result<Vec<(&str, Position, &Sexp)>, Problem> {
    let start = Position { line: 1, column: 1 };
    let not_a_record = |at, why| Err(Problem::Field(at, FieldProblem::NotARecord(why)));
    let fields = match tree {
        [] => return not_a_record(start, "found nothing"),
        [Sexp::List { items, .. }] => items,
        [Sexp::Atom { at, .. }] => return not_a_record(*at, "found an atom"),
        [_, second, ..] => return not_a_record(second.at(), "found a second one"),
    };
    fields
        .iter()
        .map(|field| match field {
            Sexp::List { items, at } => match items.as_slice() {
                [Sexp::Atom { bytes, .. }, value] => Ok((atom_text(bytes), *at, value)),
                [Sexp::Atom { bytes, .. }] => Err(Problem::Field(
                    *at,
                    FieldProblem::WrongKind {
                        name: atom_text(bytes).to_owned(),
                        expected: "a value: write (field ()) for none",
                    },
                )),
                [Sexp::Atom { bytes, .. }, _, extra, ..] => Err(Problem::Field(
                    extra.at(),
                    FieldProblem::WrongKind {
                        name: atom_text(bytes).to_owned(),
                        expected: "one value; write several as a list: (field (a b))",
                    },
                )),
                _ => Err(Problem::Field(*at, FieldProblem::NotAField)),
            },
            Sexp::Atom { at, .. } => Err(Problem::Field(*at, FieldProblem::NotAField)),
        })
        .collect()
}

/// The arguments for one field, each value checked by the option's own parser.
fn field_arguments(
    command: &Command,
    arg: &Arg,
    name: &str,
    value: &Sexp,
) -> Result<Vec<OsString>, Problem> {
    let long = arg.get_long().unwrap_or_default();
    let values: Vec<&Sexp> = match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => {
            return Ok(if boolean(name, value)? {
                vec![format!("--{long}").into()]
            } else {
                Vec::new()
            });
        }
        ArgAction::Append => match value {
            Sexp::Atom { .. } => vec![value],
            Sexp::List { items, .. } => {
                if let Some(nested) = items.iter().find(|item| matches!(item, Sexp::List { .. })) {
                    return Err(wrong_kind(name, nested, "a value or a list of values"));
                }
                items.iter().collect()
            }
        },
        _ => one_value(name, value)?.into_iter().collect(),
    };
    values
        .into_iter()
        .map(|value| {
            let Sexp::Atom { bytes, at } = value else {
                return Err(wrong_kind(name, value, "a value"));
            };
            let argument = OsString::from(format!("--{long}={}", atom_text(bytes)));
            check(command, &argument).map_err(|reason| {
                let name = name.to_owned();
                Problem::Field(*at, FieldProblem::Invalid { name, reason })
            })?;
            Ok(argument)
        })
        .collect()
}

/// The value of a flag field: `true` or `false`.
fn boolean(name: &str, value: &Sexp) -> Result<bool, Problem> {
    match value {
        Sexp::Atom { bytes, .. } if bytes == b"true" => Ok(true),
        Sexp::Atom { bytes, .. } if bytes == b"false" => Ok(false),
        _ => Err(wrong_kind(name, value, "true or false")),
    }
}

/// The value of a single-valued field: `value`, `(value)`, or none for `()`.
fn one_value<'a>(name: &str, value: &'a Sexp) -> Result<Option<&'a Sexp>, Problem> {
    match value {
        Sexp::Atom { .. } => Ok(Some(value)),
        Sexp::List { items, .. } => match items.as_slice() {
            [] => Ok(None),
            [atom @ Sexp::Atom { .. }] => Ok(Some(atom)),
            _ => Err(wrong_kind(
                name,
                value,
                "one value: value, (value) or () for none",
            )),
        },
    }
}

fn wrong_kind(name: &str, value: &Sexp, expected: &'static str) -> Problem {
    let name = name.to_owned();
    Problem::Field(value.at(), FieldProblem::WrongKind { name, expected })
}

/// Runs the option's own parser on one `--long=value` argument: the first line of clap's
/// message, without its `error: ` prefix, if it is rejected.
fn check(command: &Command, argument: &OsString) -> Result<(), String> {
    let argv = [OsString::from(command.get_name()), argument.clone()];
    match command.clone().try_get_matches_from(argv) {
        Ok(_) => Ok(()),
        Err(error) => {
            let text = error.render().to_string();
            let line = text.lines().next().unwrap_or_default();
            Err(line.trim_start_matches("error: ").to_owned())
        }
    }
}

/// Whether `arg` can be given in the file: options and flags with a long name, not the
/// built-in help and version.
fn is_field(arg: &Arg) -> bool {
    arg.get_long().is_some()
        && matches!(
            arg.get_action(),
            ArgAction::Set | ArgAction::Append | ArgAction::SetTrue | ArgAction::SetFalse
        )
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use clap::{value_parser, Arg, ArgAction, Command};

    use super::*;

    /// A small command with each kind of option the file maps.
    fn command() -> Command {
        Command::new("switch")
            .arg(
                Arg::new("config")
                    .long("config")
                    .value_parser(value_parser!(PathBuf)),
            )
            .arg(Arg::new("path").long("path"))
            .arg(Arg::new("pidfile").long("pidfile"))
            .arg(Arg::new("statedir").long("statedir"))
            .arg(
                Arg::new("listen")
                    .long("listen")
                    .action(ArgAction::Append)
                    .value_parser(value_parser!(SocketAddr)),
            )
            .arg(
                Arg::new("queues_max")
                    .long("queues-max")
                    .value_parser(value_parser!(usize))
                    .default_value("10"),
            )
            .arg(
                Arg::new("salvage")
                    .long("salvage")
                    .action(ArgAction::SetTrue)
                    .requires("statedir"),
            )
    }

    /// The arguments `text` stands for, with `cli` as the rest of the command line.
    fn merged(text: &str, cli: &[&str]) -> Result<Vec<String>, String> {
        let dir = tempfile::tempdir().expect("a temp dir");
        let file = dir.path().join("switch.conf");
        std::fs::write(&file, text).expect("write the file");
        let mut argv: Vec<OsString> = vec!["switch".into(), "--config".into(), file.into()];
        argv.extend(cli.iter().map(OsString::from));
        let merged = merge(&command(), "config", argv).map_err(|error| match error {
            ConfigError::Field { at, problem, .. } => format!("{at}: {problem}"),
            ConfigError::Syntax { error, .. } => error.to_string(),
            other => other.to_string(),
        })?;
        let merged: Vec<String> = merged
            .into_iter()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect();
        // The real parse accepts what the file became.
        command()
            .try_get_matches_from(&merged)
            .map_err(|error| error.to_string())?;
        Ok(merged[1..merged.len() - 2 - cli.len()].to_vec())
    }

    #[test]
    fn the_original_format() {
        let text =
            "((path /var/run/message-switch/sock) (pidfile ()) (configfile ())\n (statedir ()))";
        assert_eq!(
            merged(text, &[]),
            Ok(vec!["--path=/var/run/message-switch/sock".into()])
        );
        let text = r#"((path "/run/my sock") (pidfile (/run/ms.pid)) (statedir (/var/lib/ms)))"#;
        assert_eq!(
            merged(text, &[]),
            Ok(vec![
                "--path=/run/my sock".into(),
                "--pidfile=/run/ms.pid".into(),
                "--statedir=/var/lib/ms".into(),
            ])
        );
        // The files hosts ship (Sexp.to_string, the machine format), with the former
        // `daemonize` field of older ones.
        assert_eq!(
            merged(
                "((path /s)(pidfile())(configfile())(statedir (/run/ms/state)))",
                &[]
            ),
            Ok(vec!["--path=/s".into(), "--statedir=/run/ms/state".into()])
        );
        assert_eq!(
            merged(
                "((path /s)(daemonize true)(pidfile())(configfile())(statedir()))",
                &[]
            ),
            Ok(vec!["--path=/s".into()])
        );
        assert_eq!(
            merged("((daemonize maybe))", &[]),
            Err("1:13: field `daemonize` takes true or false".into())
        );
        assert_eq!(merged("()", &[]), Ok(vec![]));
    }

    #[test]
    fn every_kind_of_option() {
        let text = "((listen (127.0.0.1:1 [::1]:2)) (queues_max 5) (salvage true) (statedir d))";
        assert_eq!(
            merged(text, &[]),
            Ok(vec![
                "--listen=127.0.0.1:1".into(),
                "--listen=[::1]:2".into(),
                "--queues-max=5".into(),
                "--salvage".into(),
                "--statedir=d".into(),
            ])
        );
        assert_eq!(
            merged(
                "((listen 127.0.0.1:1) (salvage false) (queues-max (7)))",
                &[]
            ),
            Ok(vec!["--listen=127.0.0.1:1".into(), "--queues-max=7".into()])
        );
    }

    #[test]
    fn the_command_line_overrides_the_file() {
        let text = "((path /from/file) (listen (127.0.0.1:1)) (statedir d) (queues-max 5))";
        assert_eq!(
            merged(text, &["--path", "/cli", "--listen=127.0.0.1:2"]),
            Ok(vec!["--statedir=d".into(), "--queues-max=5".into()])
        );
        // A flag on the command line may need an option that only the file gives.
        assert_eq!(
            merged("((statedir d))", &["--salvage"]),
            Ok(vec!["--statedir=d".into()])
        );
    }

    #[test]
    fn field_errors_say_where_and_what() {
        let cases = [
            ("((path x)\n (colour blue))", "2:2: unknown field `colour` (the fields are the long options of --help)"),
            ("((path x) (path y))", "1:11: duplicate field `path` (first given at 1:2)"),
            ("((queues-max 1) (queues_max 2))", "1:17: duplicate field `queues_max` (first given at 1:2)"),
            ("((queues-max abc))", "1:14: field `queues-max`: invalid value 'abc' for '--queues-max <queues_max>': invalid digit found in string"),
            ("((listen (127.0.0.1:1 nowhere)))", "1:23: field `listen`: invalid value 'nowhere' for '--listen <listen>': invalid socket address syntax"),
            ("((salvage yes))", "1:11: field `salvage` takes true or false"),
            ("((path (a b)))", "1:8: field `path` takes one value: value, (value) or () for none"),
            ("((path a b))", "1:10: field `path` takes one value; write several as a list: (field (a b))"),
            ("((path))", "1:2: field `path` takes a value: write (field ()) for none"),
            ("((listen ((127.0.0.1:1))))", "1:11: field `listen` takes a value or a list of values"),
            ("((config other.conf))", "1:2: field `config` cannot be set in a config file"),
            ("((help true))", "1:2: unknown field `help` (the fields are the long options of --help)"),
            ("(path x)", "1:2: expected a field (name value)"),
            ("((path x)) ((pidfile y))", "1:12: expected one record of fields, like ((path /var/run/message-switch/sock)); found a second one"),
            ("; nothing\n", "1:1: expected one record of fields, like ((path /var/run/message-switch/sock)); found nothing"),
            ("((path x)\n (pidfile y)", "1:1: unbalanced parentheses: this `(` is never closed"),
        ];
        for (text, expected) in cases {
            assert_eq!(merged(text, &[]), Err(expected.to_owned()), "{text}");
        }
    }

    #[test]
    fn unparsable_command_lines_are_left_to_the_caller() {
        let argv: Vec<OsString> = vec![
            "switch".into(),
            "--config".into(),
            "/nonexistent".into(),
            "--bogus".into(),
        ];
        assert_eq!(merge(&command(), "config", argv.clone()).ok(), Some(argv));
        let argv: Vec<OsString> = vec!["switch".into(), "--path".into(), "p".into()];
        assert_eq!(merge(&command(), "config", argv.clone()).ok(), Some(argv));
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let argv: Vec<OsString> = vec![
            "switch".into(),
            "--config".into(),
            "/nonexistent/x.conf".into(),
        ];
        let error = merge(&command(), "config", argv).expect_err("no such file");
        assert_eq!(
            error.to_string(),
            "cannot read the config file /nonexistent/x.conf: No such file or directory (os error 2)"
        );
    }
}
