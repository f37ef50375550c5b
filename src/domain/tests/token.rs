use super::*;
use crate::domain::{AccessRefused, TokenRefused};

#[test]
fn issuing_a_token_records_its_secret_hash_only() {
    given()
        .system(create_project("web"))
        .when_system(issue_token(7, TokenKind::Api, false, &["web"]))
        .then_events(vec![Event::TokenIssued {
            id: id(1),
            secret_hash: [7; 32],
            kind: TokenKind::Api,
            description: "Api".into(),
            enabled_projects: BTreeMap::from([("web".to_string(), None)]),
            allow_trigger: false,
            expires_at: None,
        }]);
}

#[test]
fn a_token_is_scoped_to_projects_that_exist() {
    given()
        .when_system(issue_token(7, TokenKind::Api, true, &["nope"]))
        .then_refused(TokenRefused::UnknownProject {
            project: "nope".into(),
        });
}

#[test]
fn a_secret_is_issued_once() {
    given()
        .system(issue_token(7, TokenKind::Api, true, &[]))
        .when_system(issue_token(7, TokenKind::Mcp, true, &[]))
        .then_refused(TokenRefused::Exists);
}

#[test]
fn the_last_admin_token_stays() {
    given()
        .system(issue_token(1, TokenKind::Admin, true, &[]))
        .when_system(Command::RevokeToken { id: id(0) })
        .then_refused(TokenRefused::LastAdmin);
}

#[test]
fn a_token_is_revoked_once() {
    let g = given()
        .system(issue_token(1, TokenKind::Api, true, &[]))
        .system(Command::RevokeToken { id: id(0) });
    g.when_system(Command::RevokeToken { id: id(0) })
        .then_refused(TokenRefused::AlreadyRevoked { id: id(0) });
    given()
        .when_system(Command::RevokeToken { id: id(9) })
        .then_refused(TokenRefused::NotFound { id: id(9) });
}

#[test]
fn a_revoked_token_is_nobody() {
    given()
        .system(create_project("web"))
        .system(issue_token(1, TokenKind::Api, true, &[]))
        .system(Command::RevokeToken { id: id(1) })
        .when(
            Principal::Token(id(1)),
            Plane::Rest,
            trigger_build("web", vec![job("a", &[])]),
        )
        .then_refused(AccessRefused::Unauthorized);
}

#[test]
fn a_read_only_token_changes_nothing() {
    given()
        .system(create_project("web"))
        .system(issue_token(1, TokenKind::Api, false, &[]))
        .when(
            Principal::Token(id(1)),
            Plane::Rest,
            trigger_build("web", vec![job("a", &[])]),
        )
        .then_refused(AccessRefused::TriggerNotAllowed);
}

#[test]
fn each_token_kind_keeps_to_its_plane() {
    let g = || {
        given()
            .system(issue_token(1, TokenKind::Mcp, true, &[]))
            .system(issue_token(2, TokenKind::Runner, true, &[]))
    };
    g().when(Principal::Token(id(0)), Plane::Rest, create_project("web"))
        .then_refused(AccessRefused::McpTokenNotAllowed);
    g().when(Principal::Token(id(1)), Plane::Cli, create_project("web"))
        .then_refused(AccessRefused::RunnerTokenNotAllowed);
    g().when(
        Principal::Token(id(1)),
        Plane::Runner,
        Command::ExpireLeases,
    )
    .then_refused(AccessRefused::SystemOnly);
}
