//! The deploy recipes (`examples/deploy/`) are valid for their engines and match the
//! binary: every Kubernetes manifest against the Kubernetes 1.37 OpenAPI schemas
//! (`kubernetes-validate --strict`, PyPI), every AWS Batch and ECS document against
//! botocore's model of the API call it is the input of; every anchovy command line in
//! them uses flags its verb accepts, every `ACHVY_*` variable is one the binary reads,
//! each gives the id and the user (never per-pod defaults), and the exit-code semantics
//! do not make a scheduler loop on exit 5 or 6.

use std::path::{Path, PathBuf};

use crate::need;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/deploy")
}

fn files(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

fn load(p: &Path) -> serde_json::Value {
    serde_saphyr::from_str(&std::fs::read_to_string(p).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every container of a manifest (any depth): its args and its env.
fn containers(v: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                if k == "containers" || k == "containerDefinitions" {
                    out.extend(x.as_array().unwrap().iter().cloned());
                } else if k == "containerProperties" {
                    out.push(x.clone());
                } else {
                    containers(x, out);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| containers(x, out)),
        _ => {}
    }
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

const AWS_CHECK: &str = r#"
import json, sys, botocore.session, botocore.validate as v
ops = {"batch-job-definition.json": ("batch", "RegisterJobDefinition"),
       "batch-submit-job.json": ("batch", "SubmitJob"),
       "ecs-task-definition.json": ("ecs", "RegisterTaskDefinition"),
       "ecs-service.json": ("ecs", "CreateService")}
s = botocore.session.get_session()
bad = 0
for path in sys.argv[1:]:
    name = path.rsplit("/", 1)[-1]
    if name not in ops:
        print(f"{path}: no API call is known for this file name"); bad += 1; continue
    svc, op = ops[name]
    shape = s.get_service_model(svc).operation_model(op).input_shape
    r = v.ParamValidator().validate(json.load(open(path)), shape)
    if r.has_errors():
        bad += 1
        print(f"{path}: {svc} {op}: {r.generate_report()}")
    else:
        print(f"{path}: valid {svc} {op} input")
sys.exit(1 if bad else 0)
"#;

#[test]
fn deploy_recipes_are_valid_and_match_the_binary() {
    let py = need("DEPLOY_PYTHON");
    let manifests = files("k8s", "yaml");
    let aws = files("aws", "json");
    assert!(
        manifests.len() >= 4 && aws.len() >= 4,
        "{manifests:?} {aws:?}"
    );
    // The engines' own schemas.
    let kv = Path::new(&py).parent().unwrap().join("kubernetes-validate");
    let out = std::process::Command::new(&kv)
        .arg("--strict")
        .args(&manifests)
        .output()
        .unwrap();
    let text = crate::output(&out);
    assert!(out.status.success(), "kubernetes-validate: {text}");
    assert_eq!(text.matches(" passed ").count(), manifests.len(), "{text}");
    let out = std::process::Command::new(&py)
        .args(["-c", AWS_CHECK])
        .args(&aws)
        .output()
        .unwrap();
    assert!(out.status.success(), "botocore: {}", crate::output(&out));
    // The self-check of the validators: a broken manifest and document are refused.
    let env = crate::Env::new();
    let broken = env.write(
        "broken.yaml",
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: x}\nspec:\n  completions: four\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: a, image: b}]\n",
    );
    assert!(
        !std::process::Command::new(&kv)
            .arg("--strict")
            .arg(&broken)
            .output()
            .unwrap()
            .status
            .success()
    );
    let bad = env.write("batch-submit-job.json", r#"{"jobName": "x", "jobQueue": "q", "jobDefinition": "d", "arrayProperties": {"size": "8"}}"#);
    assert!(
        !std::process::Command::new(&py)
            .args(["-c", AWS_CHECK])
            .arg(&bad)
            .output()
            .unwrap()
            .status
            .success()
    );

    // Every anchovy command line: flags of its verb, variables the binary reads, the id
    // and the user given.
    let known_env: Vec<&str> = anchovy_core::config::SETTINGS
        .iter()
        .map(|s| s.env)
        .collect();
    let mut help: std::collections::BTreeMap<String, String> = Default::default();
    let mut lines = 0;
    for f in manifests.iter().chain(&aws) {
        let doc = load(f);
        let mut cs = Vec::new();
        containers(&doc, &mut cs);
        // A submission or a service names its job definition / task definition.
        let refers = doc.get("jobDefinition").or(doc.get("taskDefinition"));
        assert!(
            !cs.is_empty() || refers.is_some(),
            "{}: no container",
            f.display()
        );
        for c in cs {
            let env_names: Vec<String> = c["env"]
                .as_array()
                .or(c["environment"].as_array())
                .into_iter()
                .flatten()
                .chain(c["secrets"].as_array().into_iter().flatten())
                .map(|e| e["name"].as_str().unwrap().to_string())
                .collect();
            for n in env_names.iter().filter(|n| n.starts_with("ACHVY_")) {
                assert!(
                    known_env.contains(&n.as_str()) || n.starts_with("ACHVY_CNXN__"),
                    "{}: {n} is no variable anchovy reads",
                    f.display()
                );
            }
            let mut cmds = vec![strings(if c["args"].is_array() {
                &c["args"]
            } else {
                &c["command"]
            })];
            let hc = strings(&c["healthCheck"]["command"]);
            if hc.len() > 2 {
                assert_eq!(&hc[..2], ["CMD", "anchovy"], "{}", f.display());
                cmds.push(hc[2..].to_vec());
            }
            for args in cmds {
                lines += 1;
                let verb = args[0].clone();
                let h = help.entry(verb.clone()).or_insert_with(|| {
                    let o = env.cmd().args([verb.as_str(), "--help"]).output().unwrap();
                    assert!(o.status.success(), "{verb} --help");
                    String::from_utf8_lossy(&o.stdout).into_owned()
                });
                for a in args.iter().skip(1).filter(|a| a.starts_with('-')) {
                    let ok = if a == "-op" {
                        h.contains("`-op` is `--operator`")
                    } else if a.starts_with("--") {
                        h.contains(&format!("{a} ")) || h.contains(&format!("{a}\n"))
                    } else {
                        h.contains(&format!("{a}, "))
                    };
                    assert!(ok, "{}: `{a}` is not a flag of anchovy {verb}", f.display());
                }
                assert!(
                    args.iter().any(|a| a == "--id" || a == "-i"),
                    "{}: {args:?} gives no --id (the default is the pod's host name)",
                    f.display()
                );
                assert!(
                    env_names.iter().any(|n| n == "ACHVY_USER")
                        || args.iter().any(|a| a == "--prod" || a == "-u"),
                    "{}: no user (in a container $USER is unset: the default would be `default`)",
                    f.display()
                );
                if args.iter().any(|a| a == "--worker-num") {
                    let i = args.iter().position(|a| a == "--worker-num").unwrap();
                    assert!(
                        anchovy_core::worker::INDEX_VARS.contains(&args[i + 1].as_str()),
                        "{}",
                        f.display()
                    );
                }
            }
        }
    }
    assert!(lines >= 7, "{lines} command lines");

    // Exit codes: no scheduler loop on exit 5 or 6. Kubernetes Jobs must not `Ignore`
    // them (a replacement pod at once, again and again); the task-mode recipes report
    // them as 0; AWS Batch does not retry a configuration error.
    for f in &manifests {
        let doc = load(f);
        let text = std::fs::read_to_string(f).unwrap();
        if let Some(job) = doc["spec"]["jobTemplate"]["spec"].as_object() {
            for r in job["podFailurePolicy"]["rules"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let codes = &r["onExitCodes"]["values"];
                assert!(
                    !(r["action"] == "Ignore"
                        && codes.as_array().unwrap().iter().any(|c| c == 5 || c == 6)),
                    "{}: Ignore on exit 5/6 starts replacement pods in a loop",
                    f.display()
                );
            }
            assert!(
                text.contains("--exit-zero-on") && text.contains("locked,pending"),
                "{}",
                f.display()
            );
        }
    }
    let batch = load(&root().join("aws/batch-job-definition.json"));
    assert!(
        strings(&batch["containerProperties"]["command"]).contains(&"--exit-zero-on".to_string())
    );
    assert_eq!(
        batch["retryStrategy"]["evaluateOnExit"][0],
        serde_json::json!({"onExitCode": "2", "action": "EXIT"})
    );
    let docker = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(docker.contains("USER 10001") && docker.contains("ACHVY_BIND=0.0.0.0"));
    let ignore = std::fs::read_to_string(root().join("../../.dockerignore")).unwrap();
    assert!(
        ignore.lines().any(|l| l.trim() == "target/"),
        "the build context must leave target/ out"
    );
}
