//! Running other programs: every command is printed before it runs, in a form
//! that can be pasted into a shell, and every failure names the step and the
//! command that failed.
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

/// The workspace root (the directory holding the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// The cargo that runs xtask (`$CARGO`), or `cargo` from PATH, started in the
/// workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Where cargo puts build output: `$CARGO_TARGET_DIR` (relative to the
/// workspace root, where xtask runs cargo) or `<root>/target`.
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// Runs `cmd` to completion, announcing it as `step: running ...`.
pub fn run(step: &str, cmd: &mut Command) -> Result<()> {
    let shown = describe(cmd);
    println!("{step}: running {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("{step}: could not start {shown}"))?;
    if !status.success() {
        bail!("{step}: {shown} failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout, whatever its exit status; `None` when
/// the program is not installed.
pub fn output_if_installed(cmd: &mut Command) -> Result<Option<String>> {
    match cmd.output() {
        Ok(out) => Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("could not start {}", describe(cmd))),
    }
}

/// `KEY=value ... program args`, shell-quoted, the form printed and put in
/// error messages. A PATH override that only prepends to the current PATH is
/// shown as `PATH=dir:$PATH`.
pub fn describe(cmd: &Command) -> String {
    let mut words = Vec::new();
    for (key, value) in cmd.get_envs() {
        let Some(value) = value else { continue };
        let key = key.to_string_lossy();
        let value = value.to_string_lossy();
        let current = env::var("PATH").unwrap_or_default();
        match value.strip_suffix(&format!(":{current}")) {
            Some(prefix) if key == "PATH" && !current.is_empty() => {
                words.push(format!("PATH={}:$PATH", quote(prefix)))
            }
            _ => words.push(format!("{key}={}", quote(&value))),
        }
    }
    words.push(quote(&cmd.get_program().to_string_lossy()));
    words.extend(cmd.get_args().map(|a| quote(&a.to_string_lossy())));
    words.join(" ")
}

/// Quotes a word for a POSIX shell when it needs it.
fn quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./,:=@%+".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// `dir` followed by the entries of the current PATH.
pub fn path_with(dir: &Path) -> Result<std::ffi::OsString> {
    let current = env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![dir.to_path_buf()];
    dirs.extend(env::split_paths(&current));
    env::join_paths(dirs).context("building PATH")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_quotes_only_what_a_shell_would_split() {
        let mut cmd = Command::new("dpkg-query");
        cmd.args(["-W", "-f=${Package} ${Status}\n", "it's"]);
        cmd.env("DEBIAN_FRONTEND", "noninteractive");
        assert_eq!(
            describe(&cmd),
            "DEBIAN_FRONTEND=noninteractive dpkg-query -W '-f=${Package} ${Status}\n' 'it'\\''s'"
        );
    }
}
