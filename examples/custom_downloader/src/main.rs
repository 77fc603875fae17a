//! A user's own downloader, written against anchovy-core and shipped as its own binary
//! with the built-in plugins next to it.
//!
//! `example.TicketsDownloader` pages through a (simulated) ticketing API:
//! - a **source** for table `tickets` resumes from the `tickets.cursor` checkpoint and
//!   records the cursor after every page, in-band, so it commits with that page's rows;
//! - a **sink** chained after it adds a `priority_label` column and emits a derived
//!   table `ticket_tags` (one row per tag);
//! - **on_task hooks** "connect" at XOPEN and record the API version in the task log.
//!
//! Table options (config.yaml `tbls.tickets`): `pages` (how many pages the API has;
//! 0 = endless, for trying timeouts), `page_size` (default 5), `page_delay_ms`
//! (simulated latency, default 0).
//!
//! Run it like the stock binary:
//! `ACHVY_CNXN__TICKETS__URI=https://api.example.com/v2 cargo run -p custom_downloader -- start -op example.TicketsDownloader --id tickets --config '{tbls: {tickets: {pages: 3}}}'`

use std::sync::Arc;
use std::time::Duration;

use anchovy_core::chrono;
use anchovy_core::operator::OperatorKind;
use anchovy_core::{
    Batch, BoxError, ConnectionSpec, Emitter, Operator, OperatorSpec, OptionGroup, Sink, Source,
    TableOptions, TaskCtx, TaskType, Value, async_trait,
};

anchovy_core::table_options! {
    /// The options of the `tickets` table, declared once: the struct serde fills (unknown
    /// keys refused) and the docs `anchovy plugins` prints and the startup check reads.
    struct TicketOptions {
        /// pages the API serves (default 3; 0 = endless)
        #[serde(default = "default_pages")]
        pages: u64,
        /// tickets per page (default 5)
        #[serde(default = "default_page_size")]
        page_size: u64,
        /// simulated latency per page in milliseconds (default 0)
        #[serde(default)]
        page_delay_ms: u64,
        /// simulate the API failing on this page (1-based), as a client library would
        /// report it: with the request URL in the message
        #[serde(default)]
        fail_page: Option<u64>,
    }
}

fn default_pages() -> u64 {
    3
}
fn default_page_size() -> u64 {
    5
}

/// The simulated API: page `n` holds tickets `n*size+1 ..= (n+1)*size`.
struct TicketsApi {
    uri: String,
    token: String,
}

type Page = Vec<(u64, &'static str, Vec<&'static str>)>;

impl TicketsApi {
    async fn page(&self, cursor: u64, o: &TicketOptions) -> Result<Option<Page>, BoxError> {
        if o.pages != 0 && cursor >= o.pages {
            return Ok(None);
        }
        if o.fail_page == Some(cursor + 1) {
            // Client libraries often echo the request, credentials and all: anchovies
            // must redact them wherever the message ends up.
            return Err(format!(
                "GET {}/tickets?page={} failed: 503 Service Unavailable (bearer {})",
                self.uri,
                cursor + 1,
                self.token
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(o.page_delay_ms)).await;
        let prios = ["low", "normal", "high"];
        Ok(Some(
            (cursor * o.page_size + 1..=(cursor + 1) * o.page_size)
                .map(|id| {
                    (
                        id,
                        prios[(id % 3) as usize],
                        if id % 2 == 0 {
                            vec!["billing", "vip"]
                        } else {
                            vec!["bug"]
                        },
                    )
                })
                .collect(),
        ))
    }
}

struct TicketsSource;

#[async_trait]
impl Source for TicketsSource {
    fn tables(&self) -> &str {
        "tickets"
    }

    async fn run(&self, ctx: &TaskCtx, out: &mut Emitter) -> Result<(), BoxError> {
        let opts = TicketOptions::of(ctx.tbl())?;
        let mut cursor = ctx
            .checkpoint("tickets.cursor")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        let cnxn = ctx.session.connection("tickets")?;
        let api = TicketsApi {
            uri: cnxn.require("uri")?.to_string(),
            token: cnxn.get("token").unwrap_or_default().to_string(),
        };
        while let Some(page) = api.page(cursor, &opts).await? {
            for (id, prio, tags) in page {
                out.push([
                    ("id", Value::Int(id as i64)),
                    ("priority", Value::from(prio)),
                    ("tags", Value::Json(serde_json::json!(tags).into())),
                    ("opened", Value::Date(chrono_date(id))),
                ])
                .await?;
            }
            cursor += 1;
            // Committed together with the rows above, never before them.
            out.checkpoint("tickets.cursor", cursor).await?;
        }
        ctx.log("cursor", cursor);
        Ok(())
    }
}

fn chrono_date(id: u64) -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap_or_default() + chrono::Days::new(id)
}

/// Adds `priority_label` and emits `ticket_tags`.
struct Enricher;

#[async_trait]
impl Sink for Enricher {
    fn tables(&self) -> &str {
        "tickets"
    }

    async fn write(&self, _ctx: &TaskCtx, batch: Batch, out: &mut Emitter) -> Result<(), BoxError> {
        for (i, mut row) in batch.records().into_iter().enumerate() {
            let prio = batch.get(i, "priority").text().to_uppercase();
            row.push(("priority_label".into(), Value::String(format!("P-{prio}"))));
            out.push(row).await?;
            if let Value::Json(j) = batch.get(i, "tags")
                && let serde_json::Value::Array(tags) = j.to_value()
            {
                for t in tags {
                    out.push_to(
                        "ticket_tags",
                        [
                            ("ticket_id", batch.get(i, "id").clone()),
                            ("tag", Value::from(t.as_str().unwrap_or_default())),
                        ],
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }
}

struct TicketsDownloader;

#[async_trait]
impl Operator for TicketsDownloader {
    fn sources(&self) -> Vec<Arc<dyn Source>> {
        vec![Arc::new(TicketsSource)]
    }

    fn sinks(&self) -> Vec<Arc<dyn Sink>> {
        vec![Arc::new(Enricher)]
    }

    async fn on_task(&self, ctx: &TaskCtx) -> Result<(), BoxError> {
        match ctx.task_type {
            TaskType::Xopen => {
                let uri = ctx.session.connection("tickets")?.require("uri")?;
                // Logging a URI with credentials is a classic mistake; the output
                // boundaries redact the password anyway.
                tracing::info!(%uri, "connecting to the tickets API");
                ctx.log("endpoint", uri);
                ctx.log("api_version", "v2");
            }
            TaskType::Shutdown => tracing::info!("closing the tickets API client"),
            _ => {}
        }
        Ok(())
    }
}

const SPEC: OperatorSpec = OperatorSpec {
    name: "example.TicketsDownloader",
    description: "Example: pages through a simulated ticketing API with a cursor checkpoint.",
    kind: OperatorKind::Downloader,
    connections: &[ConnectionSpec {
        id: "tickets",
        required_any: &["uri"],
        optional: &["token"],
        description: "the tickets API: URI (https://user:password@host/path) and an optional TOKEN",
    }],
    env_vars: &[],
    table_options: &[OptionGroup {
        title: "",
        options: TicketOptions::DOCS,
    }],
    build: |_| Ok(Arc::new(TicketsDownloader)),
};

fn main() -> std::process::ExitCode {
    // The built-in plugins plus ours: one line.
    anchovy_cli::main_with(anchovy_plugins::registry().with(SPEC))
}
