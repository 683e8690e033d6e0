//! The textfile collector (`NEXUSD_METRICS_TEXTFILE_DIR`), with node_exporter's rules: every
//! `*.prom` file of the directory (not its subdirectories), in name order, is parsed whole;
//! a file that does not parse, or that carries timestamps, is skipped, logged, and sets
//! `node_textfile_scrape_error` to 1. A family seen in several files is merged; one whose HELP
//! or TYPE differs from the first file's is left out of the later file, logged, and sets the
//! error too. `node_textfile_mtime_seconds{file}` is the modification time of each file read.
//!
//! The families are merged into the scrape last ([`merge`]), once nexusd's own are known: one
//! that nexusd also exposes is merged only when its HELP and TYPE are the same (a repeated
//! label set is dropped), and otherwise left out and logged, as node_exporter's registry does.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use super::textparse::{self, TextFamily};
use crate::metrics::exposition::{Exposition, Kind};

/// Reads the directory; writes `node_textfile_*` into `out` and returns the families read.
pub(in crate::metrics) fn collect(dir: Option<&Path>, out: &mut Exposition) -> Vec<TextFamily> {
    let mut errored = false;
    let mut families: Vec<(TextFamily, Vec<String>)> = Vec::new();
    let mut mtimes: Vec<(String, f64)> = Vec::new();
    for path in dir.map(|d| prom_files(d, &mut errored)).unwrap_or_default() {
        let file = path.display().to_string();
        let parsed = match read_file(&path) {
            Ok(parsed) => parsed,
            Err(e) => {
                errored = true;
                tracing::error!(file, error = %e, "textfile skipped");
                continue;
            }
        };
        for family in parsed.0 {
            errored |= !add_family(&mut families, family, &file);
        }
        mtimes.push((file, parsed.1));
    }
    let mtime = out.gauge(
        "node_textfile_mtime_seconds",
        "Unixtime mtime of textfiles successfully read.",
    );
    for (file, seconds) in &mtimes {
        mtime.sample(&[("file", file)], *seconds);
    }
    out.single(
        "node_textfile_scrape_error",
        "1 if there was an error opening or reading a file, 0 otherwise",
        Kind::Gauge,
        f64::from(u8::from(errored)),
    );
    families
        .into_iter()
        .map(|(mut family, files)| {
            // node_exporter's help for a family no file describes.
            if family.help.is_none() {
                family.help = Some(format!("Metric read from {}", files.join(", ")));
            }
            family
        })
        .collect()
}

/// The `*.prom` files of `dir`, sorted; an unreadable directory sets the error.
fn prom_files(dir: &Path, errored: &mut bool) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            *errored = true;
            tracing::error!(path = %dir.display(), error = %e, "cannot read the textfile directory");
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".prom"))
        .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

/// One file's families and its modification time (taken after it parsed, so a file that
/// failed never looks fresh).
fn read_file(path: &Path) -> Result<(Vec<TextFamily>, f64), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    let families = textparse::parse(&text).map_err(|e| format!("not the text format: {e}"))?;
    if families
        .iter()
        .any(|f| f.samples.iter().any(|s| s.timestamp))
    {
        return Err(
            "it contains unsupported client-side timestamps, skipping entire file".to_string(),
        );
    }
    let mtime = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(|e| format!("cannot stat it: {e}"))?;
    let seconds = mtime
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as f64)
        .unwrap_or(0.0);
    Ok((families, seconds))
}

/// Adds `family` from `file`, merging it with the same family from an earlier file; false
/// (and logged) when its HELP or TYPE contradicts the earlier one, which then stands alone.
fn add_family(
    families: &mut Vec<(TextFamily, Vec<String>)>,
    family: TextFamily,
    file: &str,
) -> bool {
    let Some((seen, files)) = families.iter_mut().find(|(f, _)| f.name == family.name) else {
        families.push((family, vec![file.to_string()]));
        return true;
    };
    let help_differs = matches!((&seen.help, &family.help), (Some(a), Some(b)) if a != b);
    if help_differs || seen.kind != family.kind {
        tracing::error!(
            metric = family.name,
            file,
            first_file = files[0],
            "a textfile metric has another HELP or TYPE than in an earlier file; left out"
        );
        return false;
    }
    if seen.help.is_none() {
        seen.help = family.help;
    }
    seen.samples.extend(family.samples);
    files.push(file.to_string());
    true
}

/// Puts the textfile families into the scrape: into `nexusd`'s exposition when it already
/// holds that family, else into `host`'s, each only under the HELP and TYPE it already has.
pub(in crate::metrics) fn merge(
    families: Vec<TextFamily>,
    nexusd: &mut Exposition,
    host: &mut Exposition,
) {
    for family in families {
        let help = family.help.as_deref().unwrap_or_default();
        let target = if nexusd.existing(&family.name).is_some() {
            &mut *nexusd
        } else {
            &mut *host
        };
        let Some(into) = target.family_exactly(&family.name, help, family.kind) else {
            tracing::error!(
                metric = family.name,
                "a textfile metric has the name of one nexusd exposes, with another HELP or TYPE; left out"
            );
            continue;
        };
        for sample in &family.samples {
            let labels: Vec<(&str, &str)> = sample
                .labels
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            into.sample_with_suffix(sample.suffix, &labels, sample.value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn files_merge_and_broken_ones_are_flagged() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(
            d,
            "a.prom",
            "# HELP jobs_done Jobs done.\n# TYPE jobs_done counter\njobs_done{job=\"a\"} 3\n",
        );
        write(
            d,
            "b.prom",
            "# TYPE jobs_done counter\njobs_done{job=\"b\"} 4\nno_help 1\n",
        );
        write(
            d,
            "c.prom",
            "# HELP jobs_done Other words.\njobs_done{job=\"c\"} 5\n",
        );
        write(d, "broken.prom", "broken line here {\n");
        write(d, "stamped.prom", "stamped 1 1700000000000\n");
        write(d, "ignored.txt", "not_read 1\n");
        std::fs::create_dir(d.join("sub.prom")).unwrap();
        let mut out = Exposition::new();
        let families = collect(Some(d), &mut out);
        let names: Vec<&str> = families.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["jobs_done", "no_help"]);
        assert_eq!(families[0].help.as_deref(), Some("Jobs done."));
        assert_eq!(
            families[0].samples.len(),
            2,
            "c.prom's family has another HELP"
        );
        let b = d.join("b.prom").display().to_string();
        assert_eq!(families[1].help, Some(format!("Metric read from {b}")));
        let mut host = Exposition::new();
        merge(families, &mut Exposition::new(), &mut host);
        let text = format!("{}{}", out.render(), host.render());
        assert!(text.contains("node_textfile_scrape_error 1\n"), "{text}");
        assert!(text.contains(&format!("node_textfile_mtime_seconds{{file=\"{b}\"}}")));
        assert!(!text.contains("broken.prom"), "{text}");
        assert!(!text.contains("stamped"), "{text}");
        assert!(text.contains("jobs_done{job=\"b\"} 4\n"));
        assert!(!text.contains("not_read"));
    }

    #[test]
    fn no_directory_is_no_error_and_a_missing_one_is() {
        let mut out = Exposition::new();
        assert!(collect(None, &mut out).is_empty());
        assert!(out.render().contains("node_textfile_scrape_error 0\n"));
        let mut out = Exposition::new();
        collect(Some(Path::new("/nonexistent/nexusd-textfiles")), &mut out);
        assert!(out.render().contains("node_textfile_scrape_error 1\n"));
    }

    #[test]
    fn a_family_nexusd_exposes_is_merged_only_when_it_agrees() {
        let mut nexusd = Exposition::new();
        nexusd
            .gauge("pg_up", "Whether the last scrape could reach PostgreSQL")
            .sample(&[], 1.0);
        let mut host = Exposition::new();
        host.gauge("node_load1", "1m load average.")
            .sample(&[], 0.5);
        let families = textparse::parse(
            "# HELP pg_up lies\n# TYPE pg_up gauge\npg_up{from=\"file\"} 0\n\
             # HELP node_load1 1m load average.\n# TYPE node_load1 gauge\nnode_load1 9\nnode_load1{cpu=\"x\"} 2\n",
        )
        .unwrap();
        merge(families, &mut nexusd, &mut host);
        let (nexusd, host) = (nexusd.render(), host.render());
        assert!(!nexusd.contains("from=\"file\""), "{nexusd}");
        assert_eq!(nexusd.matches("# TYPE pg_up").count(), 1);
        assert!(
            host.contains("node_load1 0.5\n"),
            "the first sample stays: {host}"
        );
        assert!(!host.contains("node_load1 9\n"));
        assert!(host.contains("node_load1{cpu=\"x\"} 2\n"));
    }
}
