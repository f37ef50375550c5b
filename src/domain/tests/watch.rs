use super::*;
use crate::domain::{InputRefused, WatchKey, WatchPatch, WatchRefused};

const MIN: Millis = 60_000;

fn with_watch() -> Given {
    given()
        .system(create_project("web"))
        .system(Command::CreateWatch(new_watch("web", "viking://res/docs")))
}

fn by_id(n: u128) -> WatchKey {
    WatchKey {
        id: Some(id(n)),
        ..WatchKey::default()
    }
}

fn pause(key: WatchKey) -> Command {
    Command::UpdateWatch {
        key,
        if_match: None,
        patch: WatchPatch {
            is_active: Some(false),
            ..WatchPatch::default()
        },
    }
}

#[test]
fn a_new_watch_first_fires_one_interval_from_now() {
    let g = given().system(create_project("web"));
    let at = g.now();
    g.when_system(Command::CreateWatch(new_watch("web", "viking://res/docs")))
        .then_events(vec![Event::WatchCreated {
            id: id(1),
            project: "web".into(),
            source: "https://example.com/src".into(),
            to_uri: "viking://res/docs".into(),
            watch_interval: 5.0,
            is_active: true,
            reason: None,
            instruction: None,
            next_run_at: Some(at + 5 * MIN),
        }]);
}

#[test]
fn one_watch_per_to_uri_in_a_project() {
    with_watch()
        .when_system(Command::CreateWatch(new_watch("web", "viking://res/docs")))
        .then_refused(WatchRefused::ToUriTaken {
            watch: id(1),
            project: "web".into(),
            to_uri: "viking://res/docs".into(),
        });
}

#[test]
fn an_interval_is_a_positive_number_of_minutes() {
    let mut w = new_watch("web", "viking://res/docs");
    w.watch_interval = 0.0;
    given()
        .system(create_project("web"))
        .when_system(Command::CreateWatch(w))
        .then_refused(WatchRefused::IntervalNotPositive { minutes: 0.0 });
}

#[test]
fn a_watch_needs_a_project_and_uris() {
    given()
        .when_system(Command::CreateWatch(new_watch("web", "viking://res/docs")))
        .then_refused(WatchRefused::ProjectNotFound {
            project: "web".into(),
        });
    given()
        .system(create_project("web"))
        .when_system(Command::CreateWatch(new_watch("web", "not a uri")))
        .then_refused(WatchRefused::ToUriNotUri {
            value: "not a uri".into(),
        });
}

#[test]
fn a_uri_starts_with_its_scheme_and_holds_no_control_character() {
    // Each of these parses as a URL once the parse has dropped what it forgives; every door
    // refuses them alike because the rule is here.
    for bad in [
        "\u{1}viking://res/a",
        "viking://res/a\tb",
        "viking://res/\na",
        "\u{7f}viking://res/a",
        " viking://res/a",
        "//res/a",
    ] {
        given()
            .system(create_project("web"))
            .when_system(Command::CreateWatch(new_watch("web", bad)))
            .then_refused(WatchRefused::ToUriNotUri { value: bad.into() });
        let mut watch = new_watch("web", "viking://res/a");
        watch.source = bad.into();
        given()
            .system(create_project("web"))
            .when_system(Command::CreateWatch(watch))
            .then_refused(WatchRefused::SourceNotUri { value: bad.into() });
    }
}

#[test]
fn pausing_clears_the_next_run() {
    with_watch()
        .when_system(pause(by_id(1)))
        .then_events(vec![Event::WatchUpdated {
            id: id(1),
            watch_interval: None,
            is_active: Some(false),
            reason: None,
            instruction: None,
            next_run_at: Some(None),
        }]);
}

#[test]
fn a_change_against_a_stale_version_is_refused() {
    with_watch()
        .when_system(Command::DeleteWatch {
            key: by_id(1),
            if_match: Some(7),
        })
        .then_refused(InputRefused::PreconditionFailed {
            what: "watch",
            given: 7,
            current: 1,
        });
}

#[test]
fn a_to_uri_in_two_projects_needs_the_project_unless_the_id_agrees() {
    let g = || {
        with_watch()
            .system(create_project("ops"))
            .system(Command::CreateWatch(new_watch("ops", "viking://res/docs")))
    };
    let uri = || Some("viking://res/docs".to_string());
    g().when_system(Command::TriggerWatch {
        key: WatchKey {
            to_uri: uri(),
            ..WatchKey::default()
        },
    })
    .then_refused(WatchRefused::AmbiguousToUri {
        uri: "viking://res/docs".into(),
    });
    let fired = g()
        .when_system(Command::TriggerWatch {
            key: WatchKey {
                id: Some(id(3)),
                to_uri: uri(),
                project: None,
            },
        })
        .accepted();
    assert!(
        matches!(fired.as_slice(), [Event::WatchRan { id: w, manual: true, .. }] if *w == id(3)),
        "{fired:?}"
    );
}

#[test]
fn a_scheduled_fire_needs_an_active_watch_that_is_due() {
    with_watch()
        .system(pause(by_id(1)))
        .when_system(Command::FireWatch { id: id(1) })
        .then_refused(WatchRefused::Paused { id: id(1) });
    let g = with_watch();
    let due = g.state().watches[&id(1)].next_run_at.expect("scheduled");
    g.when_system(Command::FireWatch { id: id(1) })
        .then_refused(WatchRefused::NotDue { id: id(1), due });
}

#[test]
fn a_late_fire_counts_what_it_missed_and_keeps_the_rate() {
    let g = with_watch();
    let due = g.state().watches[&id(1)].next_run_at.expect("scheduled");
    let late = due + 12 * MIN - g.now();
    g.later(late)
        .when_system(Command::FireWatch { id: id(1) })
        .then_events(vec![Event::WatchRan {
            id: id(1),
            manual: false,
            missed: 2,
            build_id: None,
            next_run_at: Some(due + 15 * MIN),
        }]);
}

#[test]
fn only_a_failing_watch_pauses_itself() {
    with_watch()
        .when_system(Command::PauseFailingWatch { id: id(1) })
        .then_refused(WatchRefused::NotFailing {
            id: id(1),
            active: true,
            failures: 0,
            limit: 5,
        });
    given()
        .when_system(Command::PauseFailingWatch { id: id(4) })
        .then_refused(WatchRefused::Gone { id: id(4) });
}

#[test]
fn the_server_sets_the_shortest_interval() {
    let mut w = new_watch("web", "viking://res/docs");
    w.watch_interval = 2.0;
    given()
        .rules(Rules {
            watch_interval_floor_secs: 600,
            ..Rules::default()
        })
        .system(create_project("web"))
        .when_system(Command::CreateWatch(w))
        .then_refused(WatchRefused::IntervalBelowFloor {
            minutes: 2.0,
            floor_secs: 600,
        });
}

#[test]
fn a_watch_deleted_in_the_log_is_gone_for_its_schedule() {
    given()
        .system(create_project("web"))
        .events(vec![
            Event::WatchCreated {
                id: id(7),
                project: "web".into(),
                source: "https://example.com/src".into(),
                to_uri: "viking://res/docs".into(),
                watch_interval: 1.0,
                is_active: true,
                reason: None,
                instruction: None,
                next_run_at: Some(T0),
            },
            Event::WatchDeleted {
                id: id(7),
                project: "web".into(),
                to_uri: "viking://res/docs".into(),
            },
        ])
        .when_system(Command::FireWatch { id: id(7) })
        .then_refused(WatchRefused::Gone { id: id(7) });
}
