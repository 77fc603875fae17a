//! `anchovy completions <shell>` and `anchovy man [verb]`: scripts every shell reads
//! and manual pages `groff` renders, naming every verb and flag.

use crate::Env;

fn stdout(env: &Env, args: &[&str]) -> String {
    let out = env.cmd().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn completion_scripts_name_every_verb_and_bash_loads_its_own() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let s = stdout(&env, &["completions", shell]);
        for word in ["start", "migrate", "healthcheck", "upstream", "datastore"] {
            assert!(s.contains(word), "{shell} completions lack {word}");
        }
    }
    // bash parses the script and registers it for `anchovy`; completing `anchovy mi`
    // offers `migrate`.
    let script = env.write("anchovy.bash", stdout(&env, &["completions", "bash"]));
    let probe = format!(
        "source {}; complete -p anchovy; COMP_WORDS=(anchovy mi); COMP_CWORD=1; _anchovy anchovy mi anchovy; echo \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &probe])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("-F _anchovy anchovy"), "{text}");
    assert!(
        text.lines().last().unwrap_or_default().contains("migrate"),
        "{text}"
    );
    // An unknown shell is a usage error naming the ones there are.
    let out = env.cmd().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bash"));
}

#[test]
fn manual_pages_render_for_the_binary_and_each_verb() {
    let env = Env::new();
    let render = |roff: &str| {
        let mut child = std::process::Command::new("groff")
            .args(["-man", "-Tascii"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("groff (script/test installs it)");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(roff.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        // Bold and underline are overstrikes in groff's terminal output.
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut plain = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if chars.peek() == Some(&'\u{8}') {
                chars.next();
                continue;
            }
            plain.push(c);
        }
        plain
    };
    let main = render(&stdout(&env, &["man"]));
    for word in ["NAME", "anchovy", "anchovy-start(1)", "anchovy-migrate(1)"] {
        assert!(main.contains(word), "anchovy(1) lacks {word}:\n{main}");
    }
    let start = render(&stdout(&env, &["man", "start"]));
    for word in [
        "anchovy-start",
        "--datastore",
        "ACHVY_DATASTORE",
        "--upstream",
    ] {
        assert!(
            start.contains(word),
            "anchovy-start(1) lacks {word}:\n{start}"
        );
    }
    let out = env.cmd().args(["man", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("one of start"));
}
