//! The VRL function registry, with functions that reach outside the process held back.

use vrl::compiler::Function;

/// VRL functions that touch the network, the host or the environment. A pipeline must name
/// them in `allow_functions` to use them: an event router should not make DNS queries, HTTP
/// calls or read secrets from its environment because an event asked it to.
pub const RESTRICTED_FUNCTIONS: &[&str] = &[
    "http_request",
    "dns_lookup",
    "reverse_dns",
    "get_hostname",
    "get_env_var",
    "get_timezone_name",
];

/// The standard library minus every restricted function not in `allowed`.
pub fn function_registry(allowed: &[String]) -> Vec<Box<dyn Function>> {
    vrl::stdlib::all()
        .into_iter()
        .filter(|function| {
            let name = function.identifier();
            !RESTRICTED_FUNCTIONS.contains(&name) || allowed.iter().any(|allow| allow == name)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restricted_functions_are_absent_unless_allowed() {
        let default_names: Vec<&str> = function_registry(&[])
            .iter()
            .map(|function| function.identifier())
            .collect();
        assert!(!default_names.contains(&"dns_lookup"));
        assert!(default_names.contains(&"parse_json"));
        let allowed = function_registry(&["dns_lookup".to_owned()]);
        assert!(
            allowed
                .iter()
                .any(|function| function.identifier() == "dns_lookup")
        );
    }
}
