//! Output, exit codes, environment, user and working directory.

use kiln_executor::{ExecError, User};

use crate::support::TestContext;

#[test]
fn echo_output_is_captured_per_stream() {
    let ctx = TestContext::new();
    let (result, out) = ctx.run(ctx.request("echo hello; echo warning >&2"));
    let outcome = result.unwrap();
    assert_eq!(outcome.exit_code, 0);
    assert_eq!(outcome.upper, ctx.upper());
    assert_eq!(out.stdout, "hello\n");
    assert_eq!(out.stderr, "warning\n");
    ctx.assert_no_leftovers();
}

#[test]
fn a_non_zero_exit_is_a_failure_with_the_tail() {
    let ctx = TestContext::new();
    let (result, _) = ctx.run(ctx.request("echo before; echo broken >&2; exit 42"));
    match result.unwrap_err() {
        ExecError::Failed {
            exit_code, tail, ..
        } => {
            assert_eq!(exit_code, 42);
            // Two pipes: lines keep their order within a stream, not across streams.
            let mut lines: Vec<&str> = tail.lines().collect();
            lines.sort();
            assert_eq!(lines, ["before", "broken"]);
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    ctx.assert_no_leftovers();
}

#[test]
fn a_missing_command_fails_and_cleans_up() {
    let ctx = TestContext::new();
    let req = kiln_executor::ExecRequest::new(vec!["/no/such/binary".into()], ctx.overlay());
    let (result, _) = ctx.run(req);
    assert!(
        matches!(result, Err(ExecError::Failed { .. })),
        "{result:?}"
    );
    ctx.assert_no_leftovers();
}

#[test]
fn env_is_passed_with_a_default_path() {
    let ctx = TestContext::new();
    let out = ctx.stdout_of(
        ctx.request("env")
            .with_env(vec![("GREETING".into(), "hello world".into())]),
    );
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert!(lines.contains(&"GREETING=hello world"), "{out}");
    assert!(
        lines.contains(&"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        "{out}"
    );
}

#[test]
fn user_and_groups_are_honoured() {
    let ctx = TestContext::new();
    let out = ctx.stdout_of(ctx.request("id -u; id -g; id -G").with_user(User {
        uid: 1000,
        gid: 1001,
        additional_gids: vec![20, 30],
    }));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1000");
    assert_eq!(lines[1], "1001");
    let groups: Vec<&str> = lines[2].split_whitespace().collect();
    assert!(groups.contains(&"20") && groups.contains(&"30"), "{out}");
}

#[test]
fn a_missing_working_directory_is_created_in_the_layer() {
    let ctx = TestContext::new();
    let out = ctx.stdout_of(ctx.request("pwd").with_cwd("/work/src"));
    assert_eq!(out, "/work/src\n");
    assert_eq!(ctx.upper_tree(), ["work", "work/src"]);
}

#[test]
fn a_working_directory_through_a_symlink_stays_in_the_rootfs() {
    let ctx = TestContext::new();
    std::os::unix::fs::symlink("/../../../escape", ctx.lower().join("link")).unwrap();
    let out = ctx.stdout_of(ctx.request("pwd").with_cwd("/link/dir"));
    assert_eq!(out, "/escape/dir\n");
    assert!(ctx.upper().join("escape/dir").is_dir());
    assert!(!ctx.dir.path().join("escape").exists());
}
