//! `edgeloop traces`: look into the on-device trace store, export it, and
//! report it to the host.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use edgeloop_core::trace::{
    self, DefaultRedactor, ListFilter, NoRedaction, Redactor, ReportConfig, ReportError, Reporter,
    StoredTrace, TraceState, TraceStore,
};

#[derive(Args)]
pub struct TracesArgs {
    /// The trace store (default: $EDGELOOP_TRACES, else traces.sqlite in
    /// edgeloop's data folder, $XDG_DATA_HOME/edgeloop or ~/.local/share/edgeloop).
    #[arg(long, global = true)]
    store: Option<PathBuf>,
    #[command(subcommand)]
    command: TracesCommand,
}

#[derive(Subcommand)]
pub enum TracesCommand {
    /// Stored traces, newest first.
    List {
        /// Only traces in this state: stored or reported.
        #[arg(long)]
        state: Option<TraceState>,
        /// Only traces the verifier accepted.
        #[arg(long, conflicts_with = "rejected")]
        accepted: bool,
        /// Only traces the verifier rejected.
        #[arg(long)]
        rejected: bool,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long, default_value_t = 0)]
        offset: usize,
        /// One JSON array of stored traces.
        #[arg(long)]
        json: bool,
    },
    /// One trace in full, by id or a unique prefix of it.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Counts by state and verdict, and sizes.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Write every trace to a bundle for offline transfer: JSON Lines,
    /// gzip-compressed if FILE ends in .gz; e-mail addresses and long
    /// numbers are masked.
    Export {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Leave texts as they are.
        #[arg(long)]
        no_redact: bool,
    },
    /// Upload accepted traces the user consented to share to the host, in
    /// batches, and mark what the host acknowledged; e-mail addresses and
    /// long numbers are masked first. Off until enabled with --enable.
    /// Without options: one pass over what is not yet reported.
    Report {
        /// Turn reporting on, to the host at this base URL
        /// (e.g. http://127.0.0.1:8470); needs --token.
        #[arg(
            long,
            value_name = "URL",
            requires = "token",
            conflicts_with = "disable"
        )]
        enable: Option<String>,
        /// The host's bearer token.
        #[arg(long, requires = "enable")]
        token: Option<String>,
        /// Turn reporting off (forgets the token).
        #[arg(long)]
        disable: bool,
        /// Traces per request (saved with --enable).
        #[arg(long)]
        batch_size: Option<usize>,
        /// Tries per request (saved with --enable).
        #[arg(long)]
        max_attempts: Option<u32>,
        /// The pass's outcome as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: &TracesArgs) -> Result<()> {
    let path = args.store.clone().unwrap_or_else(trace::default_path);
    let store = TraceStore::open(&path)?;
    match &args.command {
        TracesCommand::List {
            state,
            accepted,
            rejected,
            limit,
            offset,
            json,
        } => {
            let filter = ListFilter {
                state: *state,
                accepted: match (accepted, rejected) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
                limit: Some(*limit),
                offset: *offset,
            };
            let traces = store.list(&filter)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&traces)?);
            } else {
                for t in &traces {
                    print_line(t);
                }
            }
        }
        TracesCommand::Show { id, json } => {
            let ids = store.ids_with_prefix(id, 2)?;
            let full = match ids.as_slice() {
                [one] => one,
                [] => bail!("no trace {id:?} in {}", path.display()),
                _ => bail!("{id:?} is the start of several trace ids; give more digits"),
            };
            let t = store
                .get(full)?
                .with_context(|| format!("trace {full} vanished from {}", path.display()))?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&t)?);
            } else {
                print_trace(&t);
            }
        }
        TracesCommand::Stats { json } => {
            let s = store.stats()?;
            if *json {
                let mut v = serde_json::to_value(&s)?;
                v["path"] = path.display().to_string().into();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let cap = s
                    .max_bytes
                    .map_or("none".to_string(), |m| format!("{m} bytes"));
                println!("store:        {}", path.display());
                println!(
                    "traces:       {} ({} stored, {} reported)",
                    s.traces, s.stored, s.reported
                );
                println!(
                    "accepted:     {} ({} not yet reported)",
                    s.accepted, s.unreported_accepted
                );
                println!("rejected:     {}", s.rejected);
                println!("record bytes: {} (cap: {cap})", s.record_bytes);
                println!("file bytes:   {}", s.file_bytes);
            }
        }
        TracesCommand::Export { out, no_redact } => {
            let redactor: &dyn Redactor = if *no_redact {
                &NoRedaction
            } else {
                &DefaultRedactor::default()
            };
            let n = store.export_bundle(out, redactor)?;
            eprintln!("exported {n} traces to {}", out.display());
        }
        TracesCommand::Report {
            enable,
            token,
            disable,
            batch_size,
            max_attempts,
            json,
        } => {
            let mut store = store;
            report(
                &mut store,
                enable.as_deref().zip(token.as_deref()),
                *disable,
                *batch_size,
                *max_attempts,
                *json,
            )?;
        }
    }
    Ok(())
}

fn report(
    store: &mut TraceStore,
    enable: Option<(&str, &str)>,
    disable: bool,
    batch_size: Option<usize>,
    max_attempts: Option<u32>,
    json: bool,
) -> Result<()> {
    let settings = ReportConfig::path_for(store.path());
    let saved = ReportConfig::load(&settings)?;
    let tune = |c: &mut ReportConfig| {
        if let Some(n) = batch_size {
            c.batch_size = n;
        }
        if let Some(n) = max_attempts {
            c.max_attempts = n;
        }
    };
    if let Some((url, token)) = enable {
        let mut c = ReportConfig::new(url, token);
        if let Some(old) = saved {
            // Keep tuned retries and timeouts across a change of host.
            c = ReportConfig {
                enabled: true,
                url: c.url,
                token: c.token,
                ..old
            };
        }
        tune(&mut c);
        c.save(&settings)?;
        eprintln!(
            "reporting enabled to {} (settings in {})",
            c.url,
            settings.display()
        );
        return Ok(());
    }
    if disable {
        if let Some(mut c) = saved {
            c.enabled = false;
            c.token.clear();
            c.save(&settings)?;
        }
        eprintln!("reporting disabled");
        return Ok(());
    }
    let mut config = match saved {
        Some(c) if c.enabled => c,
        _ => return Err(ReportError::Disabled { path: settings }.into()),
    };
    tune(&mut config);
    let mut reporter = Reporter::new(config)?;
    let summary = reporter.run_pass(store);
    if json {
        let v = serde_json::json!({
            "batches": summary.batches,
            "sent": summary.sent,
            "accepted": summary.accepted,
            "duplicates": summary.duplicates,
            "marked": summary.marked,
            "retries": summary.retries,
            "remaining": summary.remaining,
            "left": summary.left.iter().map(|(id, why)| serde_json::json!({"id": id, "why": why})).collect::<Vec<_>>(),
            "error": summary.error.as_ref().map(|e| e.to_string()),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        eprintln!(
            "reported {} traces in {} batches ({} new at the host, {} it already held, {} retries); {} left to report",
            summary.marked,
            summary.batches,
            summary.accepted,
            summary.duplicates,
            summary.retries,
            summary.remaining
        );
        for (id, why) in &summary.left {
            eprintln!("  {id}: {why}");
        }
    }
    match summary.error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

fn verdict(t: &StoredTrace) -> &'static str {
    if t.record.verification.accepted {
        "accepted"
    } else {
        "rejected"
    }
}

fn print_line(t: &StoredTrace) {
    let r = &t.record;
    let question: String = r.question.split_whitespace().collect::<Vec<_>>().join(" ");
    let question = match question.char_indices().nth(60) {
        Some((at, _)) => format!("{}…", &question[..at]),
        None => question,
    };
    println!(
        "{}  {}  {:<8}  {}  {:<10}  {}",
        &r.id[..12],
        rfc3339(r.created_at),
        t.state.as_str(),
        verdict(t),
        r.answer.as_deref().unwrap_or("(none)"),
        question
    );
}

fn print_trace(t: &StoredTrace) {
    let r = &t.record;
    println!("id:           {}", r.id);
    println!("created:      {}", rfc3339(r.created_at));
    println!("state:        {}", t.state.as_str());
    println!("model:        {} ({})", r.model.name, r.model.sha256);
    println!(
        "strategy:     {} — {} samples, {} tokens, {:.2} s",
        r.strategy, r.spend.samples, r.spend.tokens, r.spend.wall_secs
    );
    println!("answer:       {}", r.answer.as_deref().unwrap_or("(none)"));
    println!("confidence:   {:.2}", r.confidence);
    println!("verification: {}", verdict(t));
    for v in &r.verification.votes {
        let verdict = match v.verdict {
            Some(true) => "yes",
            Some(false) => "no",
            None => "no verdict",
        };
        println!("  {:<12} {verdict}", v.stage);
    }
    println!("consent:      {}", if r.consent { "yes" } else { "no" });
    println!("question:\n{}\n", r.question);
    println!("trace:\n{}", r.trace);
}

/// Unix seconds as an RFC 3339 UTC time.
fn rfc3339(secs: u64) -> String {
    edgeloop_core::tokenizer::strftime("%Y-%m-%dT%H:%M:%SZ", secs as i64)
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn unix_seconds_format_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
