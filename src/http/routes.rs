//! Routes declared with their access rule: [`Routes::route`] registers a handler and
//! records who may call it in the same call, so no route exists without a rule. The
//! front layer asks [`Rules::access`] which rule a request falls under.

use std::collections::HashMap;

use axum::Router;
use axum::routing::MethodRouter;

use super::state::AppState;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: health and readiness for load balancers, the API description for humans.
    Open,
    /// The bearer token when one is configured; answered within the request timeout.
    Token,
    /// The bearer token when one is configured; no request timeout, as these routes
    /// move whole stores.
    Admin,
}

impl Access {
    pub fn needs_token(self) -> bool {
        self != Access::Open
    }

    pub fn has_timeout(self) -> bool {
        self != Access::Admin
    }
}

/// The access rule of every declared route.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// By route template, as [`MatchedPath`] names it.
    routes: HashMap<&'static str, Access>,
    /// By first path segment, for the paths below it that no declared route matches:
    /// `/keys/{key}` makes `/keys/a/b` a token path (answered 404 only with the token).
    /// A single-segment route such as `/metrics` claims no paths below it.
    areas: HashMap<&'static str, Access>,
}

impl Rules {
    /// The rule for a request to `path`, which matched the route template `route`
    /// (`None`: no route).
    pub fn access(&self, route: Option<&str>, path: &str) -> Access {
        if let Some(access) = route.and_then(|r| self.routes.get(r)) {
            return *access;
        }
        match self.areas.get(first_segment(path)) {
            Some(access) => *access,
            // A route added around `Routes` fails closed rather than open.
            None if route.is_some() => Access::Token,
            None => Access::Open,
        }
    }

    /// The rule declared for the route template `path` (`/keys/{key}`), if any.
    pub fn declared(&self, path: &str) -> Option<Access> {
        self.routes.get(path).copied()
    }

    /// Every declared route template with its rule.
    pub fn declared_routes(&self) -> impl Iterator<Item = (&'static str, Access)> + '_ {
        self.routes.iter().map(|(path, access)| (*path, *access))
    }

    #[track_caller]
    fn declare(&mut self, path: &'static str, access: Access) {
        claim(&mut self.routes, path, access, "route ");
        let area = first_segment(path);
        if path.len() > area.len() + 1 {
            self.claim_area(area, access);
        }
    }

    #[track_caller]
    fn claim_area(&mut self, area: &'static str, access: Access) {
        claim(&mut self.areas, area, access, "paths under /");
    }

    #[track_caller]
    fn merge(&mut self, other: Rules) {
        for (path, access) in other.routes {
            claim(&mut self.routes, path, access, "route ");
        }
        for (area, access) in other.areas {
            self.claim_area(area, access);
        }
    }
}

/// Record `access` for `name`; two different rules for one name are a bug in the
/// route table, found when the router is built.
#[track_caller]
fn claim(
    table: &mut HashMap<&'static str, Access>,
    name: &'static str,
    access: Access,
    what: &str,
) {
    let held = *table.entry(name).or_insert(access);
    assert!(
        held == access,
        "{what}{name} is declared both {held:?} and {access:?}"
    );
}

/// `keys` for `/keys/a/b`, `` for `/`.
fn first_segment(path: &str) -> &str {
    let rest = path.strip_prefix('/').unwrap_or(path);
    rest.split('/').next().unwrap_or(rest)
}

/// A router whose routes all carry an [`Access`] rule.
/// The state is the app's; tests use others.
#[derive(Debug)]
pub struct Routes<S = AppState> {
    router: Router<S>,
    rules: Rules,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Self {
            router: Router::new(),
            rules: Rules::default(),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Serve `handler` at `path` to callers that `access` admits.
    #[track_caller]
    pub fn route(mut self, path: &'static str, access: Access, handler: MethodRouter<S>) -> Self {
        self.rules.declare(path, access);
        self.router = self.router.route(path, handler);
        self
    }

    /// Merge a router built elsewhere (the docs UI) whose routes all lie in `area`
    /// (`/docs`: the path itself and everything below it), all under `access`.
    #[track_caller]
    pub fn mount(
        mut self,
        area: &'static str,
        access: Access,
        router: impl Into<Router<S>>,
    ) -> Self {
        self.rules.claim_area(first_segment(area), access);
        self.router = self.router.merge(router);
        self
    }

    /// Merge `other`'s routes and rules.
    #[track_caller]
    pub fn merge(mut self, other: Routes<S>) -> Self {
        self.rules.merge(other.rules);
        self.router = self.router.merge(other.router);
        self
    }

    /// Add layers or fallbacks to the routes so far. Routes themselves are added only
    /// with [`Routes::route`] and [`Routes::mount`].
    pub fn map(mut self, f: impl FnOnce(Router<S>) -> Router<S>) -> Self {
        self.router = f(self.router);
        self
    }

    pub fn into_parts(self) -> (Router<S>, Rules) {
        (self.router, self.rules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    async fn handler() {}

    fn rules() -> Rules {
        let routes = Routes::<()>::new()
            .route("/keys", Access::Token, get(handler))
            .route("/keys/{key}", Access::Token, get(handler))
            .route("/metrics", Access::Token, get(handler))
            .route("/healthz", Access::Open, get(handler))
            .route("/admin/backup", Access::Admin, get(handler))
            .mount("/docs", Access::Open, Router::new());
        routes.into_parts().1
    }

    #[test]
    fn unmatched_paths_take_the_rule_of_their_first_segment_only_below_deeper_routes() {
        let rules = rules();
        let unmatched = |path| rules.access(None, path);
        assert_eq!(unmatched("/keys/a/b"), Access::Token);
        assert_eq!(unmatched("/admin"), Access::Admin);
        assert_eq!(unmatched("/admin/nothing"), Access::Admin);
        assert_eq!(unmatched("/docs/missing.js"), Access::Open);
        // `/metrics` is a single route, not an area; look-alike prefixes are not areas.
        assert_eq!(unmatched("/metrics/x"), Access::Open);
        assert_eq!(unmatched("/keysx"), Access::Open);
        assert_eq!(unmatched("/"), Access::Open);
        assert_eq!(unmatched("//keys/a"), Access::Open);
    }

    #[test]
    #[should_panic(expected = "declared both")]
    fn one_route_cannot_carry_two_rules() {
        let _ = Routes::<()>::new()
            .route("/keys/{key}", Access::Token, get(handler))
            .route("/keys/{key}", Access::Open, axum::routing::put(handler));
    }

    #[test]
    #[should_panic(expected = "declared both")]
    fn one_area_cannot_carry_two_rules() {
        let _ = Routes::<()>::new()
            .route("/keys/{key}", Access::Token, get(handler))
            .route("/keys/{key}/public", Access::Open, get(handler));
    }
}
