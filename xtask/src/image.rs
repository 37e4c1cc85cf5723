//! `cargo xtask image`: the container image, built without a registry. A
//! release build (the same path as `cargo xtask build --release`), then
//! `deploy/container/build-image.sh`, which assembles the image with
//! `buildah from scratch` and commits it to local container storage, where
//! podman finds it. The tests build their image with the same script, so
//! what they check is what this produces. The Dockerfile next to the script
//! is the other route, for machines that can pull base images.
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::{process, tasks};

/// The repository the default tags live in.
const REPOSITORY: &str = "localhost/xdpgate";
/// The script that builds the image, relative to the workspace root.
const BUILD_SCRIPT: &str = "deploy/container/build-image.sh";
/// What provides buildah (and podman and runc, to run the image).
const APT_PACKAGES: &str = "buildah podman runc";

/// Builds the release binary and the image, tagged `tags`, or
/// `localhost/xdpgate:<version>` and `:latest` when `tags` is empty.
pub fn image(tags: &[String]) -> Result<()> {
    let installed = process::output_if_installed(Command::new("buildah").arg("--version"))
        .context("image: checking for buildah")?;
    if installed.is_none() {
        bail!("image: buildah is not installed; apt-get install -y {APT_PACKAGES}");
    }
    tasks::build(true).context("image: the release build failed")?;
    let bin = process::target_dir().join("release").join("xdpgate");
    let printed = process::output_if_installed(Command::new(&bin).arg("--version"))
        .with_context(|| format!("image: running {} --version", bin.display()))?
        .with_context(|| format!("image: the release build left no {}", bin.display()))?;
    let version = version_of(&printed).with_context(|| {
        format!(
            "image: `{} --version` printed no version: {printed:?}",
            bin.display()
        )
    })?;
    let tags = if tags.is_empty() {
        default_tags(version)
    } else {
        tags.to_vec()
    };
    let mut build = Command::new("bash");
    build
        .arg(process::workspace_root().join(BUILD_SCRIPT))
        .arg(&bin)
        .args(&tags);
    process::run("image", &mut build)?;
    // The size, as podman will report it.
    process::run("image", Command::new("buildah").args(["images", &tags[0]]))?;
    println!(
        "image: {} is in local container storage; run it as deploy/container/README.md shows",
        tags.join(", ")
    );
    Ok(())
}

/// `xdpgate 0.1.0` -> `0.1.0`.
fn version_of(printed: &str) -> Option<&str> {
    printed
        .lines()
        .next()?
        .split_whitespace()
        .nth(1)
        .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
}

fn default_tags(version: &str) -> Vec<String> {
    vec![
        format!("{REPOSITORY}:{version}"),
        format!("{REPOSITORY}:latest"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_comes_from_the_binary_and_names_the_default_tags() {
        assert_eq!(version_of("xdpgate 0.1.0\n"), Some("0.1.0"));
        assert_eq!(version_of("xdpgate\n"), None);
        assert_eq!(version_of("error: something\n"), None);
        assert_eq!(
            default_tags("0.1.0"),
            ["localhost/xdpgate:0.1.0", "localhost/xdpgate:latest"]
        );
    }
}
