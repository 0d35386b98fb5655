//! Man pages and shell completions generated from the clap definitions, for packaging:
//! `filterd --generate-man DIR` writes `filterd.1` and a page per subcommand
//! (`filterd-rules.1`, ...), `filterd --generate-completions SHELL DIR` the completion script
//! for `bash`, `zsh`, `fish`, `elvish` or `powershell`; `filtertrain` and `filterq` take the
//! same two options. They are read before the normal arguments and left out of `--help`:
//! they are build steps, not things an admin runs.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

/// If the first argument asks for generated documentation, write it for `cmd` and return
/// the exit code; otherwise `None` and the program goes on.
pub fn handle(cmd: clap::Command) -> Option<ExitCode> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let result = match args.get(1).and_then(|a| a.to_str()) {
        Some("--generate-man") => match args.get(2) {
            Some(dir) => man(cmd, Path::new(dir)),
            None => Err("--generate-man needs a directory".into()),
        },
        Some("--generate-completions") => match (args.get(2).and_then(|s| s.to_str()), args.get(3))
        {
            (Some(shell), Some(dir)) => completions(cmd, shell, Path::new(dir)),
            _ => Err("--generate-completions needs a shell and a directory".into()),
        },
        _ => return None,
    };
    Some(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(crate::exit::USAGE)
        }
    })
}

/// The man pages of `cmd` and its subcommands into `dir`.
pub fn man(cmd: clap::Command, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    clap_mangen::generate_to(cmd, dir).map_err(|e| format!("{}: {e}", dir.display()))
}

/// The completion script of `cmd` for `shell` into `dir`.
pub fn completions(mut cmd: clap::Command, shell: &str, dir: &Path) -> Result<(), String> {
    let shell: clap_complete::Shell = shell
        .parse()
        .map_err(|_| format!("unknown shell `{shell}` (bash, zsh, fish, elvish, powershell)"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let name = cmd.get_name().to_string();
    clap_complete::generate_to(shell, &mut cmd, name, dir)
        .map(|_| ())
        .map_err(|e| format!("{}: {e}", dir.display()))
}
