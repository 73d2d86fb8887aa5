//! The timetable optimizer against the reference: every solution for the six instances of
//! `tests/fixtures/schedule-opt/` (a copy of `../shared/schedule-opt/`) is feasible by `evaluate.py` itself and scores what the in-crate
//! checker says; the move budget holds; a seed reproduces a solution byte for byte;
//! cancellation returns at once; bad input is exit status 2 with a message naming it.
//! (Quality and speed are measured by `bench/optimize.sh`, not asserted here.)

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use cedar::optimize::{Model, Options, optimize};
use serde_json::Value;

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schedule-opt")
}

fn instance(name: &str) -> PathBuf {
    shared().join("instances").join(format!("{name}.json"))
}

fn quick(max_moves: Option<usize>) -> Options {
    Options { time_limit: Duration::from_secs(60), seed: 7, max_moves, threads: 2, iterations: Some(60_000) }
}

fn evaluate_py(instance: &PathBuf, solution: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("solution.json");
    std::fs::write(&path, solution).unwrap();
    let out = Command::new("python3").arg(shared().join("evaluate.py")).arg(instance).arg(&path).output().unwrap();
    assert!(out.status.success(), "evaluate.py: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn every_solution_is_feasible_by_the_reference_scorer() {
    for name in ["small-1", "small-2", "medium-1", "medium-2", "large-1", "large-2"] {
        let path = instance(name);
        let model = Model::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let outcome = optimize(&model, &quick(Some(60)), &AtomicBool::new(false));
        let report = evaluate_py(&path, &serde_json::to_string(&outcome.solution).unwrap());
        let (before, after) = (&report["before"], &report["after"]);
        assert_eq!(after["feasible"], true, "{name}: {}", after["violations"]);
        assert_eq!(
            before["objective"].as_i64(),
            Some(outcome.before.objective),
            "{name}: the checkers agree on before"
        );
        assert_eq!(after["objective"].as_i64(), Some(outcome.after.objective), "{name}: the checkers agree on after");
        assert_eq!(after["moved"].as_u64(), Some(outcome.after.moved as u64), "{name}");
        assert!(outcome.after.moved <= 60, "{name}: the move budget holds");
        assert!(outcome.after.objective > outcome.before.objective, "{name}: the search improved the timetable");
    }
}

#[test]
fn a_seed_reproduces_its_solution_and_the_budget_holds() {
    let model = Model::from_json(&std::fs::read_to_string(instance("medium-2")).unwrap()).unwrap();
    let first = optimize(&model, &quick(Some(10)), &AtomicBool::new(false));
    let second = optimize(&model, &quick(Some(10)), &AtomicBool::new(false));
    assert_eq!(serde_json::to_string(&first.solution).unwrap(), serde_json::to_string(&second.solution).unwrap());
    assert!(first.after.moved <= 10);
    let none = optimize(&model, &quick(Some(0)), &AtomicBool::new(false));
    assert_eq!(none.after.moved, 0, "a budget of 0 moves nobody enrolled");
    assert!(none.after.feasible());
    let cancelled = optimize(&model, &Options { iterations: Some(u64::MAX), ..quick(None) }, &AtomicBool::new(true));
    assert!(cancelled.after.feasible(), "a cancelled search still answers with a feasible timetable");
    assert!(cancelled.wall < Duration::from_secs(5));
}

#[test]
fn the_command_answers_bad_input_with_status_2_and_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let original: Value = serde_json::from_str(&std::fs::read_to_string(instance("small-1")).unwrap()).unwrap();
    let write = |name: &str, body: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        path
    };
    let mutate = |f: &dyn Fn(&mut Value)| {
        let mut v = original.clone();
        f(&mut v);
        serde_json::to_string(&v).unwrap()
    };
    let cases = [
        ("not-json", "{ this is not json".to_owned(), "not JSON"),
        ("format", mutate(&|v| v["format"] = "cedar-schedule-opt/2".into()), "format"),
        ("unknown-teacher", mutate(&|v| v["current"][0]["teacher_id"] = "T999".into()), "unknown teacher"),
        ("off-grid", mutate(&|v| v["teachers"][0]["availability"][0]["start_time"] = "15:07".into()), "grid"),
        ("bad-weekday", mutate(&|v| v["open_hours"][0]["weekday"] = 9.into()), "weekday"),
        (
            "infeasible",
            mutate(&|v| {
                let first = v["current"][0].clone();
                let mut clash = v["current"][1].clone();
                clash["teacher_id"] = first["teacher_id"].clone();
                clash["weekday"] = first["weekday"].clone();
                clash["start_time"] = first["start_time"].clone();
                v["current"][1] = clash;
            }),
            "infeasible",
        ),
    ];
    for (name, body, says) in cases {
        let path = write(name, body);
        let out = Command::new(env!("CARGO_BIN_EXE_cedar")).arg("optimize").arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{name}: {stderr}");
        assert!(out.stdout.is_empty(), "{name}: no solution on stdout");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_cedar"))
        .args(["optimize", "--iterations", "20000", "--max-moves", "5"])
        .arg(instance("small-2"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let solution: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(solution["format"], "cedar-schedule-opt-solution/1");
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(summary.contains("utilization") && summary.contains("moved"), "{summary}");
}
