//! The benchmark report: `docs/benchmarks/README.md` and its PNG charts,
//! assembled from whichever `docs/benchmarks/<bench>.json` files exist, so a
//! single benchmark's run updates its own section and leaves the others as
//! they were measured. Every bench binary writes the same shape of JSON:
//!
//! ```json
//! { "bench": "flood", "title": "...", "description": "markdown",
//!   "quick": false, "rounds": 3, "started": "...", "duration_s": 120.0,
//!   "machine": { "kernel": "...", "cpu": "...", "cores": 2, ... },
//!   "versions": { "tool": "version" }, "commands": ["exact command", ...],
//!   "tables": [{ "title": "...", "columns": [...], "rows": [[...], ...] }],
//!   "plots": [{ "file": "x.png", "title": "...", "unit": "...",
//!               "categories": [...], "series": [{ "name": "...", "values": [...] }] }],
//!   "notes": ["markdown", ...], "samples": { ... } }
//! ```
//!
//! The report only formats what the JSON says; no figure is computed here.
use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};
use plotters::{
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};
use serde_json::Value;

/// The benchmarks in report order; also the names `cargo xtask bench` takes.
pub const BENCHES: [&str; 5] = ["flood", "proxy", "xdp", "sets", "ratelimit"];

/// Where DejaVu Sans lives on Debian (fonts-dejavu-core); plotters needs a
/// font to draw any text and ships none.
/// An optional hand-written note in the results directory about the
/// conditions of the run, shown under the machine description.
const CONDITIONS: &str = "conditions.md";

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Writes `dir/README.md` and one PNG per plot from the JSON files in `dir`.
pub fn assemble(dir: &Path) -> Result<PathBuf> {
    let font = fs::read(FONT).with_context(|| {
        format!("report: reading the chart font {FONT} (apt-get install fonts-dejavu-core)")
    })?;
    // plotters keeps registered fonts for the process's life.
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    if plotters::style::register_font("sans-serif", FontStyle::Normal, font).is_err() {
        bail!("report: {FONT} is not a font plotters can read");
    }

    let mut sections = Vec::new();
    for bench in BENCHES {
        let path = dir.join(format!("{bench}.json"));
        if !path.exists() {
            continue;
        }
        let text = fs::read_to_string(&path)
            .with_context(|| format!("report: reading {}", path.display()))?;
        let result: Value = serde_json::from_str(&text)
            .with_context(|| format!("report: {} is not JSON", path.display()))?;
        for plot in list(&result, "plots") {
            let file = str_of(plot, "file");
            if file.is_empty() || file.contains('/') {
                bail!(
                    "report: {}: a plot's file must be a plain name, got {file:?}",
                    path.display()
                );
            }
            bar_chart(&dir.join(file), plot)
                .with_context(|| format!("report: drawing {file} from {}", path.display()))?;
        }
        sections.push(result);
    }
    if sections.is_empty() {
        bail!(
            "report: no results in {} (run `cargo xtask bench all`)",
            dir.display()
        );
    }
    // What the JSON cannot know (a busy machine, a VM), as the person who
    // ran it wrote it down.
    let conditions = fs::read_to_string(dir.join(CONDITIONS)).unwrap_or_default();
    let readme = dir.join("README.md");
    fs::write(&readme, markdown(&sections, conditions.trim()))
        .with_context(|| format!("report: writing {}", readme.display()))?;
    Ok(readme)
}

fn list<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value
        .get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A table cell: strings as they are, numbers with sensible precision.
fn cell(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.0}"),
            Some(f) if f.abs() >= 100.0 => format!("{f:.0}"),
            Some(f) if f.abs() >= 10.0 => format!("{f:.1}"),
            Some(f) => format!("{f:.2}"),
            None => n.to_string(),
        },
        Value::Null => "n/a".into(),
        other => other.to_string(),
    }
}

fn markdown(sections: &[Value], conditions: &str) -> String {
    let mut md = String::new();
    md.push_str(
        "# Benchmarks\n\n\
         Produced by `cargo xtask bench all` (as root, on Debian 12) from the JSON files in this \
         directory; `cargo xtask bench <flood|proxy|xdp|sets>` re-runs one benchmark and \
         re-assembles this page. Every benchmark runs all its competitors in the same invocation, \
         alternating A B C A B C..., and reports the median of the rounds; ratios are of medians. \
         The figures are what was measured on the machine below, nothing else: on another \
         machine the absolute numbers differ, the ratios less so.\n\n",
    );
    if let Some(first) = sections.first() {
        md.push_str("## Machine\n\n");
        if let Some(machine) = first.get("machine").and_then(Value::as_object) {
            for (key, value) in machine {
                let _ = writeln!(md, "* {key}: {}", cell(value));
            }
        }
        md.push('\n');
    }
    if !conditions.is_empty() {
        let _ = writeln!(md, "{conditions}\n");
    }
    md.push_str("Contents:\n\n");
    for s in sections {
        let title = str_of(s, "title");
        let _ = writeln!(md, "* [{title}](#{})", anchor(title));
    }
    md.push('\n');
    for s in sections {
        section(&mut md, s);
    }
    md
}

/// GitHub's heading anchor: lower case, spaces to dashes, most punctuation dropped.
fn anchor(title: &str) -> String {
    title
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn section(md: &mut String, s: &Value) {
    let _ = writeln!(md, "## {}\n", str_of(s, "title"));
    let mode = if s.get("quick").and_then(Value::as_bool) == Some(true) {
        " **Quick smoke run: the figures only prove the benchmark runs.**"
    } else {
        ""
    };
    let _ = writeln!(
        md,
        "Run {} with {} round(s), {:.0} s in all.{mode}\n",
        str_of(s, "started"),
        cell(s.get("rounds").unwrap_or(&Value::Null)),
        s.get("duration_s").and_then(Value::as_f64).unwrap_or(0.0),
    );
    let _ = writeln!(md, "{}\n", str_of(s, "description"));
    for table in list(s, "tables") {
        let title = str_of(table, "title");
        if !title.is_empty() {
            let _ = writeln!(md, "**{title}**\n");
        }
        let columns = list(table, "columns");
        let header: Vec<String> = columns.iter().map(cell).collect();
        let _ = writeln!(md, "| {} |", header.join(" | "));
        let _ = writeln!(md, "|{}", " --- |".repeat(columns.len()));
        for row in list(table, "rows") {
            let cells: Vec<String> = row
                .as_array()
                .map(|r| r.iter().map(cell).collect())
                .unwrap_or_default();
            let _ = writeln!(md, "| {} |", cells.join(" | "));
        }
        md.push('\n');
    }
    for plot in list(s, "plots") {
        let _ = writeln!(
            md,
            "![{}]({})\n",
            str_of(plot, "title"),
            str_of(plot, "file")
        );
    }
    let notes = list(s, "notes");
    if !notes.is_empty() {
        for note in notes {
            let _ = writeln!(md, "* {}", note.as_str().unwrap_or(""));
        }
        md.push('\n');
    }
    if let Some(versions) = s.get("versions").and_then(Value::as_object) {
        if !versions.is_empty() {
            md.push_str("Versions: ");
            let all: Vec<String> = versions
                .iter()
                .map(|(k, v)| format!("{k} {}", cell(v)))
                .collect();
            let _ = writeln!(md, "{}.\n", all.join("; "));
        }
    }
    let commands = list(s, "commands");
    if !commands.is_empty() {
        md.push_str("Commands, exactly as run:\n\n```sh\n");
        for c in commands {
            let _ = writeln!(md, "{}", c.as_str().unwrap_or(""));
        }
        md.push_str("```\n\n");
    }
}

const COLOURS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

/// A horizontal grouped bar chart: one group per category, one bar per
/// series, the value written at the end of each bar.
fn bar_chart(path: &Path, plot: &Value) -> Result<()> {
    let categories: Vec<String> = list(plot, "categories").iter().map(cell).collect();
    let series: Vec<(String, Vec<Option<f64>>)> = list(plot, "series")
        .iter()
        .map(|s| {
            let values = list(s, "values").iter().map(Value::as_f64).collect();
            (str_of(s, "name").to_string(), values)
        })
        .collect();
    if categories.is_empty() || series.is_empty() {
        bail!("a plot needs categories and series");
    }
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten())
        .fold(0.0f64, |a, &b| a.max(b));
    let max = if max > 0.0 { max * 1.18 } else { 1.0 };
    let n = categories.len();
    let per_group = 22 * series.len() as u32 + 14;
    let legend = if series.len() > 1 {
        30 * series.len() as u32
    } else {
        0
    };
    let height = 110 + per_group * n as u32 + legend;
    let label_width = categories.iter().map(|c| c.len()).max().unwrap_or(0) as u32 * 8 + 20;

    let root = BitMapBackend::new(path, (1000, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(str_of(plot, "title"), ("sans-serif", 20))
        .margin(12)
        .margin_left(label_width)
        .x_label_area_size(40)
        .build_cartesian_2d(0f64..max, 0f64..n as f64)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc(str_of(plot, "unit"))
        .x_label_formatter(&|v| cell(&serde_json::json!(v)))
        .label_style(("sans-serif", 13))
        .draw()?;
    let slot = 0.8 / series.len() as f64;
    for (j, (name, values)) in series.iter().enumerate() {
        let colour = COLOURS[j % COLOURS.len()];
        let bars = values.iter().enumerate().filter_map(|(k, v)| {
            let v = (*v)?;
            // The first category on top.
            let y0 = (n - 1 - k) as f64 + 0.9 - (j + 1) as f64 * slot;
            Some(Rectangle::new(
                [(0.0, y0), (v, y0 + slot * 0.9)],
                colour.filled(),
            ))
        });
        let drawn = chart.draw_series(bars)?;
        if series.len() > 1 {
            drawn.label(name.as_str()).legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 14, y + 5)], colour.filled())
            });
        }
        let labels = values.iter().enumerate().filter_map(|(k, v)| {
            let v = (*v)?;
            let y = (n - 1 - k) as f64 + 0.9 - (j as f64 + 0.55) * slot;
            Some(Text::new(
                format!(" {}", cell(&serde_json::json!(v))),
                (v, y),
                ("sans-serif", 12)
                    .into_text_style(&root)
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            ))
        });
        chart.draw_series(labels)?;
    }
    for (k, name) in categories.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(0.0, (n - 1 - k) as f64 + 0.5));
        root.draw(&Text::new(
            name.clone(),
            (x - 8, y),
            ("sans-serif", 14)
                .into_text_style(&root)
                .pos(Pos::new(HPos::Right, VPos::Center)),
        ))?;
    }
    if series.len() > 1 {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_anchor_like_github() {
        assert_eq!(
            anchor("SYN flood (veth, 2 namespaces)"),
            "syn-flood-veth-2-namespaces"
        );
        assert_eq!(
            anchor("Set updates: edit to enforcement"),
            "set-updates-edit-to-enforcement"
        );
    }

    #[test]
    fn a_section_shows_the_tables_plots_and_commands_it_was_given() {
        let result = serde_json::json!({
            "bench": "flood", "title": "SYN flood", "description": "What it does.",
            "quick": true, "rounds": 1, "started": "2026-11-28T04:00:00Z", "duration_s": 12.4,
            "tables": [{"title": "Medians", "columns": ["filter", "rate"],
                        "rows": [["ufw", 123456.7], ["xdpgate", 2.345]]}],
            "plots": [{"file": "flood-rate.png", "title": "Flood rate"}],
            "commands": ["trafgen --dev x"], "notes": ["a note"],
            "versions": {"ufw": "0.36.2"}
        });
        let mut md = String::new();
        section(&mut md, &result);
        assert!(md.contains("## SYN flood"), "{md}");
        assert!(md.contains("Quick smoke run"), "{md}");
        assert!(
            md.contains("| filter | rate |\n| --- | --- |\n| ufw | 123457 |\n| xdpgate | 2.35 |"),
            "{md}"
        );
        assert!(md.contains("![Flood rate](flood-rate.png)"), "{md}");
        assert!(md.contains("```sh\ntrafgen --dev x\n```"), "{md}");
        assert!(md.contains("* a note"), "{md}");
        assert!(md.contains("ufw 0.36.2"), "{md}");
    }
}
