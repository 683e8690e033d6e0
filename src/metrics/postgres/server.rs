//! The server as a whole: its version and start time (`pg_static`,
//! `pg_postmaster_start_time_seconds`) and every numeric setting (`pg_settings_*`, in
//! postgres_exporter's units).

use sqlx::PgConnection;

use crate::metrics::exposition::{Exposition, Kind};

pub(super) async fn static_info(
    conn: &mut PgConnection,
    out: &mut Exposition,
) -> Result<(), sqlx::Error> {
    let (version, short, started): (String, String, Option<f64>) = sqlx::query_as(
        "SELECT version(), current_setting('server_version'), \
                extract(epoch FROM pg_postmaster_start_time())::float8",
    )
    .fetch_one(&mut *conn)
    .await?;
    out.untyped("pg_static", "Version string as reported by postgres")
        .sample(
            &[
                ("short_version", &short_version(&short)),
                ("version", &version),
            ],
            1.0,
        );
    if let Some(started) = started {
        out.single(
            "pg_postmaster_start_time_seconds",
            "Time at which postmaster started",
            Kind::Gauge,
            started,
        );
    }
    Ok(())
}

/// `15.20 (Debian 15.20-1.pgdg120+1)` → `15.20.0`, as postgres_exporter's semver parse gives.
fn short_version(server_version: &str) -> String {
    let numeric: String = server_version
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts: Vec<&str> = numeric.split('.').filter(|p| !p.is_empty()).collect();
    while parts.len() < 3 {
        parts.push("0");
    }
    parts[..3].join(".")
}

pub(super) async fn settings(
    conn: &mut PgConnection,
    out: &mut Exposition,
) -> Result<(), sqlx::Error> {
    let rows: Vec<(String, String, String, String, String)> = sqlx::query_as(
        "SELECT name, setting, COALESCE(unit, ''), short_desc, vartype FROM pg_settings \
          WHERE vartype IN ('bool', 'integer', 'real') AND name != 'sync_commit_cancel_wait'",
    )
    .fetch_all(&mut *conn)
    .await?;
    for (name, setting, unit, description, vartype) in rows {
        let Some((value, suffix)) = normalise_setting(&setting, &unit, &vartype) else {
            continue;
        };
        // A GUC's dot (pg_stat_statements.max) becomes `_` in Exposition::family.
        let name = format!("pg_settings_{name}{suffix}");
        let help = match suffix {
            "_seconds" => format!("Server Parameter: {description} [Units converted to seconds.]"),
            "_bytes" => format!("Server Parameter: {description} [Units converted to bytes.]"),
            _ => format!("Server Parameter: {description}"),
        };
        out.gauge(&name, &help).sample(&[], value);
    }
    Ok(())
}

/// postgres_exporter's unit rules: times to seconds, sizes to bytes, -1 left as it is, booleans
/// 1/0. Returns the value and the name suffix, or `None` for values it would not export.
fn normalise_setting(setting: &str, unit: &str, vartype: &str) -> Option<(f64, &'static str)> {
    if vartype == "bool" {
        return match setting {
            "on" => Some((1.0, "")),
            "off" => Some((0.0, "")),
            _ => None,
        };
    }
    let value: f64 = setting.parse().ok()?;
    let suffix = match unit {
        "" => return Some((value, "")),
        "ms" | "s" | "min" | "h" | "d" => "_seconds",
        "B" | "kB" | "MB" | "GB" | "TB" | "1kB" | "2kB" | "4kB" | "8kB" | "16kB" | "32kB"
        | "64kB" | "16MB" | "32MB" | "64MB" => "_bytes",
        _ => return None,
    };
    if value == -1.0 {
        return Some((value, suffix));
    }
    let factor = match unit {
        "ms" => 0.001,
        "s" | "B" => 1.0,
        "min" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        "kB" | "1kB" => 1024.0,
        "2kB" => 2048.0,
        "4kB" => 4096.0,
        "8kB" => 8192.0,
        "16kB" => 16384.0,
        "32kB" => 32768.0,
        "64kB" => 65536.0,
        "MB" => 1048576.0,
        "16MB" => 16.0 * 1048576.0,
        "32MB" => 32.0 * 1048576.0,
        "64MB" => 64.0 * 1048576.0,
        "GB" => 1073741824.0,
        "TB" => 1099511627776.0,
        _ => return None,
    };
    Some((value * factor, suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_follow_postgres_exporter_units() {
        assert_eq!(normalise_setting("on", "", "bool"), Some((1.0, "")));
        assert_eq!(normalise_setting("off", "", "bool"), Some((0.0, "")));
        assert_eq!(normalise_setting("100", "", "integer"), Some((100.0, "")));
        assert_eq!(
            normalise_setting("16384", "8kB", "integer"),
            Some((134217728.0, "_bytes"))
        );
        assert_eq!(
            normalise_setting("4096", "kB", "integer"),
            Some((4194304.0, "_bytes"))
        );
        assert_eq!(
            normalise_setting("1024", "MB", "integer"),
            Some((1073741824.0, "_bytes"))
        );
        assert_eq!(
            normalise_setting("200", "ms", "integer"),
            Some((0.2, "_seconds"))
        );
        assert_eq!(
            normalise_setting("1", "min", "integer"),
            Some((60.0, "_seconds"))
        );
        assert_eq!(
            normalise_setting("-1", "ms", "integer"),
            Some((-1.0, "_seconds"))
        );
        assert_eq!(normalise_setting("0.2", "", "real"), Some((0.2, "")));
        assert_eq!(normalise_setting("5", "furlongs", "integer"), None);
        assert_eq!(normalise_setting("x", "", "integer"), None);
    }

    #[test]
    fn short_version_is_semver() {
        assert_eq!(short_version("15.20 (Debian 15.20-1.pgdg120+1)"), "15.20.0");
        assert_eq!(short_version("16.4"), "16.4.0");
        assert_eq!(short_version("17beta1"), "17.0.0");
    }
}
