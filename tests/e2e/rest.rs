//! rest.Downloader against a real REST server: json-server 0.17.4 (npm, installed by
//! script/services.sh `install_json_server`) behind the middlewares of
//! tests/rest/server.js (auth, throttling, failures, cut responses, envelopes). Every
//! pagination strategy and auth, child endpoints, incremental runs held against a
//! seeded model (the API's records at the end equal the target, every record once)
//! with the server killed mid-pagination, retries counted, malformed pages, spec files,
//! and no secret in any output.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::{Duration, Instant};

use anchovy_core::Value;
use anchovy_core::testutil::Rng;

use crate::upload::{Target, fetch};
use crate::{Env, committed, need, output, results, tbl_data, tbl_task, walk};

/// A json-server of one test, on its own data file.
struct Api {
    child: std::process::Child,
    port: u16,
    db: std::path::PathBuf,
}

impl Api {
    fn start(env: &Env, data: &serde_json::Value, extra: &[&str]) -> Api {
        let db = env.write("api/db.json", data.to_string());
        Api::spawn(db, 0, extra)
    }

    fn spawn(db: std::path::PathBuf, port: u16, extra: &[&str]) -> Api {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/rest/server.js");
        let mut child = std::process::Command::new("node")
            .arg(script)
            .arg(&db)
            .args(["--port", &port.to_string()])
            .args(extra)
            .env("NODE_PATH", need("JSON_SERVER_NODE_PATH"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start node tests/rest/server.js");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("json-server did not start: {line:?}"));
        Api { child, port, db }
    }

    /// The server started again on the same port and data (after it died).
    fn restart(&mut self, extra: &[&str]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let again = Api::spawn(self.db.clone(), self.port, extra);
        let old = std::mem::replace(self, again);
        std::mem::forget(old);
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn curl(&self, method: &str, path: &str, body: &serde_json::Value) {
        let out = std::process::Command::new("curl")
            .args([
                "-sf",
                "-X",
                method,
                "-H",
                "content-type: application/json",
                "-d",
            ])
            .arg(body.to_string())
            .arg(format!("{}{path}", self.url()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{method} {path}: {out:?}");
    }

    fn stats(&self) -> serde_json::Value {
        let out = std::process::Command::new("curl")
            .args(["-sf", &format!("{}/__stats", self.url())])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn wait_dead(&mut self) {
        for _ in 0..100 {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the server did not die");
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn users(n: i64) -> Vec<serde_json::Value> {
    (1..=n)
        .map(|i| {
            serde_json::json!({"id": i, "name": format!("user \"{i}\", ü"), "score": i as f64 / 4.0,
                "updated_at": format!("2024-01-01T00:{:02}:{:02}Z", i / 60, i % 60)})
        })
        .collect()
}

fn download(env: &Env, id: &str, envs: &[(&str, &str)]) -> std::process::Output {
    let mut c = env.cmd();
    c.args(["start", "-op", "rest.Downloader", "--id", id]);
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn download_ok(env: &Env, id: &str, envs: &[(&str, &str)]) -> serde_json::Value {
    let out = download(env, id, envs);
    assert!(
        out.status.success(),
        "download failed: {}\n{}",
        crate::stderr(&out),
        String::from_utf8_lossy(&out.stdout)
    );
    results(&out)
}

/// Committed ids of `table`, in commit order.
fn ids(env: &Env, id: &str, table: &str) -> Vec<i64> {
    committed(&env.home(), "tester", id)
        .get(table)
        .map(|rows| {
            rows.iter()
                .map(|r| match &r["id"] {
                    Value::Int(i) => *i,
                    v => panic!("id {v:?}"),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn sorted(mut v: Vec<i64>) -> Vec<i64> {
    v.sort();
    v
}

#[test]
fn every_pagination_strategy_reads_every_record_once() {
    let env = Env::new();
    let api = Api::start(&env, &serde_json::json!({"users": users(53)}), &[]);
    let u = api.url();
    env.write(
        "config.yaml",
        format!(
            r#"tbls:
  by_page:
    base_url: {u}
    path: /users
    primary_key: id
    pagination: {{type: page_number, page_param: _page, size_param: _limit, size: 10}}
  by_offset:
    base_url: {u}
    path: /users
    pagination: {{type: offset, offset_param: _start, limit_param: _limit, limit: 7}}
  by_cursor:
    base_url: {u}
    path: /env/users
    params: {{limit: 9}}
    records: data.items
    pagination: {{type: cursor, cursor_path: meta.next_cursor, param: cursor}}
  by_next_url:
    base_url: {u}
    path: /env/users
    params: {{limit: 9}}
    records: data.items
    pagination: {{type: next_url, next_path: links.next}}
  by_link:
    base_url: {u}
    path: /users
    params: {{_page: 1, _limit: 8}}
    pagination: {{type: link_header}}
  by_total:
    base_url: {u}
    path: /env/users
    params: {{limit: 20}}
    records: data.items
    pagination: {{type: page_number, page_param: cursor_unused, total_path: meta.total}}
"#
        ),
    );
    let r = download_ok(&env, "pages", &[]);
    let all: Vec<i64> = (1..=53).collect();
    // pages: 53 records by 10 -> 6; by 7 -> 8 (the last short); by 9 -> 6; by 8 -> 7.
    for (t, pages) in [
        ("by_page", 6),
        ("by_offset", 8),
        ("by_cursor", 6),
        ("by_next_url", 6),
        ("by_link", 7),
    ] {
        assert_eq!(sorted(ids(&env, "pages", t)), all, "{t}");
        assert_eq!(tbl_data(&r, t)["pages"], pages, "{t}: {}", tbl_data(&r, t));
        assert_eq!(tbl_data(&r, t)["source_rows"], 53, "{t}");
    }
    // The envelope's page parameter is ignored by the server: the same first page
    // over and over, until the total says every record was seen (3 pages of 20).
    assert_eq!(ids(&env, "pages", "by_total").len(), 60);
    assert_eq!(tbl_data(&r, "by_total")["pages"], 3);
    // Types: integers, floats and text as the API wrote them; the key from primary_key.
    let rows = &committed(&env.home(), "tester", "pages")["by_page"];
    let r7 = rows.iter().find(|r| r["id"] == Value::Int(7)).unwrap();
    assert_eq!(r7["name"], Value::String("user \"7\", ü".into()));
    assert_eq!(r7["score"], Value::Float(1.75));
    let t: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(env.area("tester", "pages").join("$tables/by_page.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(t["unique_by"], "id");
}

#[test]
fn each_auth_is_sent_and_bad_credentials_fail_clearly() {
    let env = Env::new();
    let mut api = Api::start(
        &env,
        &serde_json::json!({"users": users(12)}),
        &["--token-ttl", "1"],
    );
    let u = api.url();
    let tok = "tok-3f9a8b7c6d5e4f3a2b1c";
    let pw = "pw-9e8d7c6b5a4f3e2d";
    let key = "key-1a2b3c4d5e6f7a8b";
    let secret = "oauth-s3cret";
    let cfg = |tok_path: &str| {
        format!(
            r#"tbls:
  bearer:
    base_url: {u}
    path: /bearer~{tok_path}/users
    auth: {{type: bearer, token: "${{token}}"}}
    pagination: {{type: link_header}}
    params: {{_page: 1, _limit: 5}}
  basic:
    base_url: {u}
    path: /basic~me~${{password}}/users
    auth: {{type: basic, username: me, password: "${{password}}"}}
  key_header:
    base_url: {u}
    path: /keyh~X-Api-Key~${{api_key}}/users
    auth: {{type: api_key, name: X-Api-Key, value: "${{api_key}}"}}
  key_query:
    base_url: {u}
    path: /keyq~api_key~${{api_key}}/users
    auth: {{type: api_key, name: api_key, value: "${{api_key}}", in: query}}
    pagination: {{type: link_header}}
    params: {{_page: 1, _limit: 5}}
  oauth:
    base_url: {u}
    path: /slow~400/oauth/revoke~r~3/users
    auth: {{type: oauth2_client_credentials, token_url: "{u}/oauth/token", client_id: anchovies, client_secret: "${{client_secret}}"}}
    pagination: {{type: link_header}}
    params: {{_page: 1, _limit: 2}}
  bearer_inline:
    base_url: {u}
    path: /bearer~${{token}}/users
    auth: {{type: bearer, token: "{tok}"}}
  oauth_body:
    base_url: {u}
    path: /oauth/users
    auth: {{type: oauth2_client_credentials, token_url: "{u}/oauth/token", client_id: anchovies, client_secret: "${{client_secret}}", client_auth: body, scope: read}}
"#
        )
    };
    let envs = [
        ("ACHVY_CNXN__SHOP__TOKEN", tok),
        ("ACHVY_CNXN__SHOP__PASSWORD", pw),
        ("ACHVY_CNXN__SHOP__API_KEY", key),
        ("ACHVY_CNXN__SHOP__CLIENT_SECRET", secret),
    ];
    env.write("config.yaml", cfg("${token}"));
    let out = download(&env, "shop", &envs);
    assert!(out.status.success(), "{}", output(&out));
    let r = results(&out);
    for t in [
        "bearer",
        "bearer_inline",
        "basic",
        "key_header",
        "key_query",
        "oauth",
        "oauth_body",
    ] {
        assert_eq!(
            sorted(ids(&env, "shop", t)),
            (1..=12).collect::<Vec<_>>(),
            "{t}"
        );
    }
    // Tokens live 1 s and pages come 0.4 s apart: refreshed before expiry, and once
    // more after the revocation (a 401 answered with a new token).
    let issued = api.stats()["tokens_issued"].as_u64().unwrap();
    assert!(issued >= 3, "{issued} tokens issued");
    assert_eq!(tbl_data(&r, "oauth")["source_rows"], 12);
    // A wrong token: the table fails with the status and the URL, without secrets.
    env.write("config.yaml", cfg("other-token-value"));
    let bad = download(&env, "shop", &envs);
    assert_eq!(bad.status.code(), Some(1), "{}", output(&bad));
    let rb = results(&bad);
    let t = tbl_task(&rb, "bearer");
    assert_eq!(t["status"], "ERR");
    let msg = t.to_string();
    assert!(
        msg.contains("401")
            && msg.contains("/bearer~other-token-value/users")
            && msg.contains("check the credentials"),
        "{msg}"
    );
    // No secret anywhere: stdout, stderr, every file of the datastore (`$tables` keeps
    // the `${...}` templates, and an inline credential redacted).
    let mut seen = output(&out) + &output(&bad);
    for e in walk(&env.home()) {
        seen.push_str(&String::from_utf8_lossy(&std::fs::read(&e).unwrap()));
    }
    for s in [tok, pw, key, secret, "me:pw-"] {
        assert!(!seen.contains(s), "secret {s} leaked");
    }
    api.restart(&[]);
}

#[test]
fn child_endpoints_carry_the_parents_key() {
    let env = Env::new();
    let customers: Vec<_> = (1..=4)
        .map(|i| serde_json::json!({"id": i, "name": format!("c{i}")}))
        .collect();
    let orders: Vec<_> = (1..=23)
        .map(|i| serde_json::json!({"id": 100 + i, "customerId": i % 3 + 1, "total": format!("{i}.50")}))
        .collect();
    let api = Api::start(
        &env,
        &serde_json::json!({"customers": customers, "orders": orders}),
        &[],
    );
    let u = api.url();
    env.write(
        "config.yaml",
        format!(
            r#"tbls:
  customers:
    base_url: {u}
    path: /customers
    primary_key: id
    pagination: {{type: page_number, page_param: _page, size_param: _limit, size: 3}}
  orders:
    base_url: {u}
    path: /customers/{{id}}/orders
    parent: customers
    primary_key: [customers_id, id]
    pagination: {{type: link_header}}
    params: {{_page: 1, _limit: 2}}
    columns: {{total: decimal}}
"#
        ),
    );
    let r = download_ok(&env, "shop", &[]);
    let rows = &committed(&env.home(), "tester", "shop")["orders"];
    assert_eq!(rows.len(), 23);
    for row in rows {
        let Value::Int(id) = row["id"] else { panic!() };
        assert_eq!(
            row["customers_id"],
            Value::Int((id - 100) % 3 + 1),
            "{row:?}"
        );
        assert_eq!(row["customerId"], row["customers_id"]);
        assert!(matches!(row["total"], Value::Decimal(_)), "{row:?}");
    }
    assert!(
        tbl_data(&r, "orders")["parent_http_requests"]
            .as_u64()
            .unwrap()
            >= 2
    );
    // Customer 4 has no orders: one empty page.
    assert_eq!(ids(&env, "shop", "customers").len(), 4);
}

#[test]
fn throttling_errors_and_cut_responses_are_retried_and_counted() {
    let env = Env::new();
    let api = Api::start(&env, &serde_json::json!({"users": users(30)}), &[]);
    let u = api.url();
    let table = |name: &str, prefix: &str| {
        format!(
            "  {name}:\n    base_url: {u}\n    path: /{prefix}/users\n    pagination: {{type: link_header}}\n    params: {{_page: 1, _limit: 10}}\n    retry: {{initial_backoff: 50ms, max_backoff: 200ms}}\n"
        )
    };
    let mut cfg = String::from("tbls:\n");
    for (n, p) in [
        ("unavailable", "fail~a~503~2"),
        ("throttled", "fail~b~429~1"),
        ("throttled_date", "faildate~c~1"),
        ("reset", "reset~d~2"),
        ("cut", "cut~e~2"),
        ("server_error", "fail~f~500~1"),
        ("timeout", "fail~g~408~1"),
    ] {
        cfg.push_str(&table(n, p));
    }
    env.write("config.yaml", &cfg);
    let started = Instant::now();
    let r = download_ok(&env, "flaky", &[]);
    // Retry-After: 1 (seconds) and an HTTP date 1.5 s ahead were honoured.
    assert!(started.elapsed() >= Duration::from_secs(1));
    for (t, retries) in [
        ("unavailable", 2),
        ("throttled", 1),
        ("throttled_date", 1),
        ("reset", 2),
        ("cut", 2),
        ("server_error", 1),
        ("timeout", 1),
    ] {
        assert_eq!(
            sorted(ids(&env, "flaky", t)),
            (1..=30).collect::<Vec<_>>(),
            "{t}"
        );
        assert_eq!(
            tbl_data(&r, t)["http_retries"],
            retries,
            "{t}: {}",
            tbl_data(&r, t)
        );
    }
    assert_eq!(tbl_data(&r, "throttled")["http_throttled"], 1);
    assert!(
        tbl_data(&r, "throttled_date")["http_wait_ms"]
            .as_u64()
            .unwrap()
            >= 400
    );

    // Failures that stay: the retries are bounded; a 404 is final at once.
    env.write(
        "config.yaml",
        format!(
            "tbls:\n  down:\n    base_url: {u}\n    path: /fail~h~502~99/users\n    retry: {{max_retries: 2, initial_backoff: 10ms}}\n  missing:\n    base_url: {u}\n    path: /nothing\n    params: {{api_key: k-8d7e6f5a4b3c2d1e}}\n"
        ),
    );
    let out = download(&env, "flaky", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", output(&out));
    let rb = results(&out);
    let down = tbl_task(&rb, "down").to_string();
    assert!(
        down.contains("502") && down.contains("injected 502"),
        "{down}"
    );
    assert_eq!(tbl_data(&rb, "down")["http_requests"], 3);
    let missing = tbl_task(&rb, "missing").to_string();
    assert!(
        missing.contains("404")
            && missing.contains("/nothing?api_key=***")
            && missing.contains("check base_url and path"),
        "{missing}"
    );
    assert!(!output(&out).contains("k-8d7e6f5a4b3c2d1e"));
}

#[test]
fn a_malformed_page_names_the_url_and_the_json_path_and_keeps_nothing() {
    let env = Env::new();
    let api = Api::start(&env, &serde_json::json!({"users": users(30)}), &[]);
    let u = api.url();
    env.write(
        "config.yaml",
        format!(
            "tbls:\n  users:\n    base_url: {u}\n    path: /bad~2/users\n    pagination: {{type: link_header}}\n    params: {{_page: 1, _limit: 10}}\n  wrapped:\n    base_url: {u}\n    path: /env/users\n    records: data.rows\n"
        ),
    );
    let out = download(&env, "bad", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", output(&out));
    let r = results(&out);
    let m = tbl_task(&r, "users").to_string();
    assert!(
        m.contains(&format!("GET {u}/bad~2/users?_page=2&_limit=10"))
            && m.contains("at `[10]`")
            && m.contains("column"),
        "{m}"
    );
    let m = tbl_task(&r, "wrapped").to_string();
    assert!(m.contains("no `data.rows`"), "{m}");
    // The first page was read, but a full read commits whole or not at all.
    assert!(ids(&env, "bad", "users").is_empty());
}

#[test]
fn spec_files_serve_many_anchovies() {
    let env = Env::new();
    let api = Api::start(
        &env,
        &serde_json::json!({"users": users(7), "orders": [{"id": 1}, {"id": 2}]}),
        &[],
    );
    env.write(
        "connectors/shop.yaml",
        "base_url: ${base_url}\nauth: {type: bearer, token: \"${token}\"}\npagination: {type: link_header}\nparams: {_page: 1, _limit: 3}\ntbls:\n  users:\n    path: /bearer~t-one-1234567890/users\n    primary_key: id\n  orders:\n    path: /bearer~t-one-1234567890/orders\n",
    );
    env.write(
        "config.yaml",
        "tbls:\n  shop:\n    spec: connectors/shop.yaml\n    connection: shop\n    params: {_page: 1, _limit: 2}\n",
    );
    let envs = [
        ("ACHVY_CNXN__SHOP__BASE_URL", api.url()),
        ("ACHVY_CNXN__SHOP__TOKEN", "t-one-1234567890".to_string()),
    ];
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = download_ok(&env, "one", &envs);
    assert_eq!(
        sorted(ids(&env, "one", "users")),
        (1..=7).collect::<Vec<_>>()
    );
    assert_eq!(sorted(ids(&env, "one", "orders")), vec![1, 2]);
    // The entry's own params win over the spec's: pages of 2.
    assert_eq!(tbl_data(&r, "users")["pages"], 4);
    // Another anchovy takes one table of the same spec by its name.
    env.write(
        "config.yaml",
        "tbls:\n  users:\n    spec: connectors/shop.yaml\n    connection: shop\n",
    );
    let r = download_ok(&env, "two", &envs);
    assert_eq!(
        r["batches"][0]["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["task_type"] == "TBL")
            .count(),
        1
    );
    assert_eq!(
        sorted(ids(&env, "two", "users")),
        (1..=7).collect::<Vec<_>>()
    );
    // A missing attribute names the variable to set.
    let out = download(&env, "three", &[("ACHVY_CNXN__SHOP__BASE_URL", &api.url())]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        output(&out).contains("ACHVY_CNXN__SHOP__TOKEN"),
        "{}",
        output(&out)
    );
}

#[test]
fn requests_are_spaced_by_max_requests_per_second() {
    let env = Env::new();
    let api = Api::start(&env, &serde_json::json!({"users": users(20)}), &[]);
    env.write(
        "config.yaml",
        format!(
            "tbls:\n  users:\n    base_url: {}\n    path: /users\n    pagination: {{type: link_header}}\n    params: {{_page: 1, _limit: 2}}\n    max_requests_per_second: 10\n",
            api.url()
        ),
    );
    let started = Instant::now();
    let r = download_ok(&env, "polite", &[]);
    // 10 pages at 10 a second: the last starts at least 0.9 s after the first.
    assert_eq!(tbl_data(&r, "users")["http_requests"], 10);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

/// The model: the API's records by id. A seeded sequence of rounds inserts and updates
/// records (each change with a later `updated_at`), then reads incrementally, with the
/// server killed mid-pagination in some rounds (the run fails, the server comes back,
/// the next run continues) and uploads into SQLite: the target equals the model after
/// every round, every record once. Commits go out at every checkpoint, so the sorted
/// table commits page by page and a kill leaves part of a read committed.
#[test]
fn incremental_runs_hold_the_target_to_the_api_under_kills() {
    let seed = anchovy_core::testutil::seed("REST_SEED");
    let mut rng = Rng(seed);
    let env = Env::new();
    let mut model: BTreeMap<i64, serde_json::Value> = BTreeMap::new();
    let mut clock = 0u64;
    let stamp = |clock: &mut u64| {
        *clock += 1; // strictly increasing
        format!(
            "2024-03-{:02}T{:02}:{:02}:00Z",
            1 + *clock / 1440,
            (*clock / 60) % 24,
            *clock % 60
        )
    };
    for id in 1..=25 {
        let at = stamp(&mut clock);
        model.insert(id, serde_json::json!({"id": id, "v": 0, "updated_at": at}));
    }
    let mut api = Api::start(
        &env,
        &serde_json::json!({"items": model.values().collect::<Vec<_>>(), "sitems": model.values().collect::<Vec<_>>()}),
        &[],
    );
    let u = api.url();
    env.write(
        "config.yaml",
        format!(
            r#"tbls:
  items:
    base_url: {u}
    path: /items
    primary_key: id
    pagination: {{type: link_header}}
    params: {{_page: 1, _limit: 4}}
    incremental: {{cursor: updated_at, param: updated_at_gte, start: "2024-01-01T00:00:00Z"}}
    retry: {{max_retries: 1, initial_backoff: 20ms}}
  sitems:
    base_url: {u}
    path: /sitems
    primary_key: id
    pagination: {{type: page_number, page_param: _page, size_param: _limit, size: 3}}
    params: {{_sort: updated_at}}
    incremental: {{cursor: updated_at, param: updated_at_gte, lookback: 2m, sorted: true}}
    retry: {{max_retries: 1, initial_backoff: 20ms}}
"#
        ),
    );
    env.write("upload.yaml", "tbls: {}\n");
    let mut next_id = 26;
    let mut cursors: BTreeMap<&str, String> = BTreeMap::new();
    for round in 0..6 {
        if round > 0 {
            for _ in 0..rng.below(8) + 1 {
                let at = stamp(&mut clock);
                if rng.chance(50) {
                    let id = next_id;
                    next_id += 1;
                    let rec = serde_json::json!({"id": id, "v": 0, "updated_at": at});
                    api.curl("POST", "/items", &rec);
                    api.curl("POST", "/sitems", &rec);
                    model.insert(id, rec);
                } else {
                    let id = rng.below(next_id as u64 - 1) as i64 + 1;
                    let v = model[&id]["v"].as_i64().unwrap() + 1;
                    let patch = serde_json::json!({"v": v, "updated_at": at});
                    api.curl("PATCH", &format!("/items/{id}"), &patch);
                    api.curl("PATCH", &format!("/sitems/{id}"), &patch);
                    model.insert(id, serde_json::json!({"id": id, "v": v, "updated_at": at}));
                }
            }
        }
        if rng.chance(50) {
            // Killed after a few pages: the run fails; nothing past its last commit stays.
            let after = (rng.below(4) + 1).to_string();
            api.restart(&["--die-after", &after]);
            let out = download(&env, "inc", &[("ACHVY_COMMIT_INTERVAL", "0")]);
            api.wait_dead();
            eprintln!(
                "round {round}: killed after {after} pages: exit {:?}",
                out.status.code()
            );
            api.restart(&[]);
        }
        download_ok(&env, "inc", &[("ACHVY_COMMIT_INTERVAL", "0")]);
        let up = crate::upload::upload(&env, Target::Sqlite, "wh", "inc", &[]);
        assert!(up.status.success(), "{}", output(&up));
        for t in ["items", "sitems"] {
            let got = fetch(
                Target::Sqlite,
                &env,
                &format!(
                    "SELECT CAST(id AS TEXT), CAST(v AS TEXT), updated_at FROM {} ORDER BY id",
                    Target::Sqlite.table("inc", t)
                ),
            );
            let want: Vec<Vec<Option<String>>> = model
                .values()
                .map(|r| {
                    vec![
                        Some(r["id"].to_string()),
                        Some(r["v"].to_string()),
                        Some(r["updated_at"].as_str().unwrap().to_string()),
                    ]
                })
                .collect();
            assert_eq!(got, want, "seed {seed} round {round} table {t}");
            // The committed cursor never moves back (lookback re-reads older records).
            let cp: serde_json::Value = serde_json::from_slice(
                &std::fs::read(
                    env.area("tester", "inc")
                        .join(format!("$checkpoints/{t}.json")),
                )
                .unwrap(),
            )
            .unwrap();
            let now = cp["value"]["value"].as_str().unwrap().to_string();
            if let Some(before) = cursors.insert(t, now.clone()) {
                assert!(
                    now >= before,
                    "seed {seed} round {round} {t}: {before} -> {now}"
                );
            }
        }
    }
}

/// examples/rest as shipped: run.sh serves the local shop (OAuth2, an envelope with a
/// cursor, a child endpoint) and loads it into SQLite; run again, nothing is doubled.
#[test]
fn the_local_shop_example_runs_end_to_end() {
    let env = Env::new();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/rest");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // A smaller shop than run.sh makes (each order's lines are one request).
    let generated = std::process::Command::new("python3")
        .arg(example.join("local/gen.py"))
        .arg("60")
        .arg(env.path().join("db.json"))
        .output()
        .unwrap();
    assert!(generated.status.success(), "{generated:?}");
    let job = || {
        let out = std::process::Command::new("bash")
            .arg(example.join("run.sh"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .env("HOME", env.path().join("home"))
            .env("USER", "tester")
            .env("ANCHOVY_BIN", assert_cmd::cargo::cargo_bin("anchovy"))
            .env("JSON_SERVER_NODE_PATH", need("JSON_SERVER_NODE_PATH"))
            .env("SHOP_PORT", port.to_string())
            .env("SHOP_DATA_DIR", env.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", output(&out));
    };
    job();
    job();
    let db: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path().join("db.json")).unwrap()).unwrap();
    for (t, src) in [
        ("customers", "customers"),
        ("orders", "orders"),
        ("order_lines", "lines"),
    ] {
        let got = fetch(
            Target::Sqlite,
            &env,
            &format!(
                "SELECT CAST(count(*) AS TEXT), CAST(count(DISTINCT id) AS TEXT) FROM {}",
                Target::Sqlite.table("shop", t)
            ),
        );
        let n = db[src].as_array().unwrap().len().to_string();
        assert_eq!(got, vec![vec![Some(n.clone()), Some(n)]], "{t}");
    }
    let lines = fetch(
        Target::Sqlite,
        &env,
        &format!(
            "SELECT CAST(count(*) AS TEXT) FROM {} WHERE orders_id <> \"orderId\"",
            Target::Sqlite.table("shop", "order_lines")
        ),
    );
    assert_eq!(lines[0][0].as_deref(), Some("0"));
}

/// examples/rest/connectors/github.yaml resolves whole (connection attributes in the
/// path, headers, the incremental start and the sort order in the first request),
/// checked against a port where nothing listens; the token never shows.
#[test]
fn the_github_spec_builds_its_requests() {
    let env = Env::new();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/rest");
    env.write(
        "connectors/github.yaml",
        std::fs::read(example.join("connectors/github.yaml")).unwrap(),
    );
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.write(
        "config.yaml",
        format!(
            "tbls:\n  github:\n    spec: connectors/github.yaml\n    connection: github\n    base_url: http://127.0.0.1:{dead}\n    retry: {{max_retries: 0}}\n"
        ),
    );
    let out = download(
        &env,
        "gh",
        &[
            ("ACHVY_CNXN__GITHUB__TOKEN", "ghp_0123456789abcdefTOKEN"),
            ("ACHVY_CNXN__GITHUB__OWNER", "rust-lang"),
            ("ACHVY_CNXN__GITHUB__REPO", "rust"),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", output(&out));
    let r = results(&out);
    let issues = tbl_task(&r, "issues").to_string();
    assert!(
        issues.contains(&format!("GET http://127.0.0.1:{dead}/repos/rust-lang/rust/issues?state=all&per_page=100&sort=updated&direction=asc&since=2024-01-01T00%3A00%3A00Z"))
            && issues.contains("cannot connect"),
        "{issues}"
    );
    assert_eq!(tbl_task(&r, "issue_comments")["status"], "ERR");
    assert!(!output(&out).contains("ghp_0123456789abcdefTOKEN"));
}

/// A request slower than `timeout` is retried and then fails naming the timeout; a
/// read longer than `total_timeout` stops, keeping nothing of the read.
#[test]
fn request_and_total_timeouts_stop_slow_reads() {
    let env = Env::new();
    let api = Api::start(&env, &serde_json::json!({"users": users(20)}), &[]);
    let u = api.url();
    env.write(
        "config.yaml",
        format!(
            "tbls:\n  slow_request:\n    base_url: {u}\n    path: /slow~1500/users\n    timeout: 300ms\n    retry: {{max_retries: 1, initial_backoff: 10ms}}\n  slow_read:\n    base_url: {u}\n    path: /slow~300/users\n    pagination: {{type: link_header}}\n    params: {{_page: 1, _limit: 2}}\n    total_timeout: 1s\n"
        ),
    );
    let started = Instant::now();
    let out = download(&env, "slow", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", output(&out));
    assert!(started.elapsed() < Duration::from_secs(20));
    let r = results(&out);
    let t = tbl_task(&r, "slow_request").to_string();
    assert!(
        t.contains("timed out") && t.contains("gave up after 2 attempts"),
        "{t}"
    );
    let t = tbl_task(&r, "slow_read").to_string();
    assert!(t.contains("longer than total_timeout (1s)"), "{t}");
    assert!(ids(&env, "slow", "slow_read").is_empty());
}

/// Records whose typed values do not parse: by default the table fails naming the page
/// and the column; with `on_bad_record: quarantine` they go to `$rejects/<table>` in the
/// same commits while the good ones load.
#[test]
fn bad_records_fail_the_table_or_are_quarantined() {
    let env = Env::new();
    let mut recs = users(20);
    recs[4]["updated_at"] = "yesterday".into();
    recs[11]["updated_at"] = serde_json::json!("2024-13-45T99:00:00Z");
    let api = Api::start(&env, &serde_json::json!({"users": recs}), &[]);
    let cfg = |extra: &str| {
        format!(
            "tbls:\n  users:\n    base_url: {}\n    path: /users\n    pagination: {{type: link_header}}\n    params: {{_page: 1, _limit: 6}}\n    primary_key: id\n    columns: {{updated_at: datetime}}\n{extra}",
            api.url()
        )
    };
    env.write("config.yaml", cfg(""));
    let out = download(&env, "bad", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", output(&out));
    let t = tbl_task(&results(&out), "users").to_string();
    assert!(
        t.contains("_page=1&_limit=6") && t.contains("`yesterday` is not a valid datetime"),
        "{t}"
    );
    env.write("config.yaml", cfg("    on_bad_record: quarantine\n"));
    let r = download_ok(&env, "bad", &[]);
    assert_eq!(
        tbl_data(&r, "users")["rejected"],
        2,
        "{}",
        tbl_data(&r, "users")
    );
    let mut good = sorted(ids(&env, "bad", "users"));
    good.dedup();
    assert_eq!(good.len(), 18);
    assert!(!good.contains(&5) && !good.contains(&12));
    let rejects = &committed(&env.home(), "tester", "bad")["$rejects/users"];
    assert_eq!(rejects.len(), 2);
    assert!(
        rejects.iter().any(|r| match &r["raw"] {
            Value::String(s) => s.contains("yesterday"),
            _ => false,
        }),
        "{rejects:?}"
    );

    // Fixed options (the field read as text), the quarantined records replay.
    env.write(
        "config.yaml",
        cfg("    on_bad_record: quarantine\n").replace("updated_at: datetime", "updated_at: str"),
    );
    let out = env
        .cmd()
        .args(["rejects", "replay", "-op", "rest.Downloader", "-i", "bad"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output(&out));
    let mut all = sorted(ids(&env, "bad", "users"));
    all.dedup();
    assert_eq!(all, (1..=20).collect::<Vec<_>>());
}

/// A page whose body is cut short is read again; the bad records of the cut reads are
/// forgotten (count, `max_rejects`, quarantined rows), so each is quarantined once.
#[test]
fn a_page_read_again_quarantines_its_bad_records_once() {
    let env = Env::new();
    let mut recs = users(12);
    recs[0]["updated_at"] = "yesterday".into();
    recs[1]["updated_at"] = "never".into();
    let api = Api::start(&env, &serde_json::json!({"users": recs}), &[]);
    env.write(
        "config.yaml",
        format!(
            "tbls:\n  users:\n    base_url: {}\n    path: /cut~q~2/users\n    pagination: {{type: link_header}}\n    params: {{_page: 1, _limit: 6}}\n    columns: {{updated_at: datetime}}\n    on_bad_record: quarantine\n    max_rejects: 2\n    retry: {{initial_backoff: 10ms}}\n",
            api.url()
        ),
    );
    let r = download_ok(&env, "cutq", &[]);
    let d = tbl_data(&r, "users");
    assert_eq!(d["http_retries"], 2, "{d}");
    assert_eq!(d["rejected"], 2, "{d}");
    assert_eq!(
        committed(&env.home(), "tester", "cutq")["$rejects/users"].len(),
        2
    );
    assert_eq!(
        sorted(ids(&env, "cutq", "users")),
        (3..=12).collect::<Vec<_>>()
    );
}

/// Hostile option values: each fails its own table, naming the key and what to write.
#[test]
fn bad_options_name_the_key() {
    let env = Env::new();
    let api = Api::start(&env, &serde_json::json!({"users": users(3)}), &[]);
    let u = api.url();
    let cases = [
        (
            "rate",
            "max_requests_per_second: -2",
            "max_requests_per_second",
        ),
        (
            "rate_text",
            "max_requests_per_second: fast",
            "max_requests_per_second",
        ),
        ("timeout", "timeout: soon", "timeout"),
        ("retries", "retry: {max_retries: -1}", "retry.max_retries"),
        ("retry_key", "retry: {tries: 3}", "unknown key `tries`"),
        ("pagination", "pagination: {type: pages}", "page_number"),
        ("auth", "auth: {type: magic}", "oauth2_client_credentials"),
        (
            "api_key_in",
            "auth: {type: api_key, name: k, value: v, in: body}",
            "`in: body`",
        ),
        (
            "lookback",
            "incremental: {cursor: updated_at, param: updated_at_gte, lookback: soon}",
            "lookback",
        ),
        ("braces", "path: \"/users/${oops\"", "without `}`"),
        (
            "no_parent",
            "parent: nobody\n    path: /users/{id}/x",
            "no table `nobody`",
        ),
    ];
    let mut cfg = String::from("tbls:\n");
    for (name, opt, _) in cases {
        let path = if opt.contains("path:") {
            ""
        } else {
            "    path: /users\n"
        };
        cfg.push_str(&format!("  {name}:\n    base_url: {u}\n{path}    {opt}\n"));
    }
    env.write("config.yaml", cfg);
    let out = download(&env, "hostile", &[]);
    assert_ne!(out.status.code(), Some(0), "{}", output(&out));
    let r = results(&out);
    for (name, _, want) in cases {
        let t = tbl_task(&r, name).to_string();
        assert!(t.contains("\"ERR\"") && t.contains(want), "{name}: {t}");
    }
}
