//! The cache directives that apply to this cache: from the first valid,
//! non-empty targeted field of the target list (RFC 9213 §2.2), else from
//! `Cache-Control` (RFC 9111 §5.2).

use super::{lines, Headers};
use sfv::{BareItem, Dictionary, ListEntry, Parser};

/// Response directives this cache acts on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Directives {
    pub no_store: bool,
    /// Unqualified `no-cache`: stored, but never reused without validation.
    pub no_cache: bool,
    /// `no-cache="a, b"`: those fields are not stored.
    pub no_cache_fields: Vec<String>,
    /// Unqualified `private`: a shared cache does not store it.
    pub private: bool,
    /// `private="a"`: those fields are not stored.
    pub private_fields: Vec<String>,
    pub public: bool,
    /// Seconds; an invalid value counts as 0 (stale), RFC 9111 §4.2.1.
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub must_understand: bool,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
}

/// The directives for this cache, and whether they came from a targeted
/// field (then `Expires` is ignored too, RFC 9213 §2.2).
pub(crate) fn for_this_cache(headers: Headers, targets: &[String]) -> (Directives, bool) {
    for name in targets {
        let value = lines(headers, name).collect::<Vec<_>>().join(",");
        if value.trim().is_empty() {
            continue; // absent or empty: as if not present
        }
        let parsed = if name.eq_ignore_ascii_case("surrogate-control") {
            // Only directives for every surrogate or for this one count; a
            // field with none for this cache is as if not present.
            parse_surrogate_control(&value)
        } else {
            parse_targeted(&value)
        };
        if let Some(d) = parsed {
            return (d, true);
        }
    }
    (
        parse_cache_control(lines(headers, "cache-control"), false),
        false,
    )
}

/// A directive's argument.
enum Arg {
    None,
    Value(String),
    /// Not a token or quoted-string (e.g. `max-age= 5`, `max-age='5'`).
    Invalid,
}

/// `Cache-Control` lines (or `Surrogate-Control`, whose `max-age=60+30`
/// suffix is cut). Names are case-insensitive; a valued directive's first
/// occurrence wins; commas inside quoted strings do not split.
pub(crate) fn parse_cache_control<S: AsRef<str>>(
    values: impl IntoIterator<Item = S>,
    surrogate: bool,
) -> Directives {
    let mut d = Directives::default();
    for value in values {
        for (name, arg, _) in elements(value.as_ref(), surrogate) {
            apply(
                &mut d,
                &name.to_ascii_lowercase(),
                surrogate_arg(arg, surrogate),
            );
        }
    }
    d
}

/// `Surrogate-Control` (Edge Architecture 1.0 §3): its directives without a
/// target, and those targeted at [`SURROGATE_DEVICE`]
/// (`max-age=60;rcdn`); `None` if no directive is for this cache.
pub(crate) fn parse_surrogate_control(value: &str) -> Option<Directives> {
    let mut d = Directives::default();
    let mut any = false;
    for (name, arg, target) in elements(value, true) {
        if target.is_some_and(|t| !t.eq_ignore_ascii_case(SURROGATE_DEVICE)) {
            continue; // for another device
        }
        any = true;
        apply(&mut d, &name.to_ascii_lowercase(), surrogate_arg(arg, true));
    }
    any.then_some(d)
}

/// The device token this cache answers to in `Surrogate-Control` targets;
/// it is advertised with [`SURROGATE_CAPABILITY`].
pub const SURROGATE_DEVICE: &str = "rcdn";

/// The `Surrogate-Capability` request field value that advertises
/// [`SURROGATE_DEVICE`] to the origin (Edge Architecture 1.0 §2.2).
pub const SURROGATE_CAPABILITY: &str = "rcdn=\"Surrogate/1.0\"";

/// `max-age=60+30` in `Surrogate-Control`: the freshness part.
fn surrogate_arg(mut arg: Arg, surrogate: bool) -> Arg {
    if surrogate {
        if let Arg::Value(v) = &mut arg {
            v.truncate(v.find('+').unwrap_or(v.len()));
        }
    }
    arg
}

fn apply(d: &mut Directives, name: &str, arg: Arg) {
    let secs = || match &arg {
        Arg::Value(v) => Some(delta_seconds(v).unwrap_or(0)),
        _ => Some(0),
    };
    match name {
        "no-store" => d.no_store = true,
        "no-cache" => fields_or_flag(arg, &mut d.no_cache, &mut d.no_cache_fields),
        "private" => fields_or_flag(arg, &mut d.private, &mut d.private_fields),
        "public" => d.public = true,
        "must-revalidate" => d.must_revalidate = true,
        "proxy-revalidate" => d.proxy_revalidate = true,
        "must-understand" => d.must_understand = true,
        "max-age" => d.max_age = d.max_age.or_else(secs),
        "s-maxage" => d.s_maxage = d.s_maxage.or_else(secs),
        "stale-while-revalidate" => {
            d.stale_while_revalidate = d.stale_while_revalidate.or_else(secs)
        }
        "stale-if-error" => d.stale_if_error = d.stale_if_error.or_else(secs),
        _ => {}
    }
}

/// `no-cache` / `private`: a field list, or the whole response when bare
/// (or when the argument is unreadable: the most restrictive reading).
fn fields_or_flag(arg: Arg, flag: &mut bool, fields: &mut Vec<String>) {
    match arg {
        Arg::Value(v) => {
            let named = v.split(',').map(str::trim).filter(|f| !f.is_empty());
            fields.extend(named.map(str::to_string));
        }
        Arg::None | Arg::Invalid => *flag = true,
    }
}

/// `delta-seconds` (RFC 9111 §1.2.2): digits only, saturating.
fn delta_seconds(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(v.bytes().fold(0u64, |n, b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// The `name[=arg]` elements of one field line (with `surrogate`, also
/// `name[=arg];target`, and the target). A malformed element (a name with
/// white space, garbage after a quoted string) is skipped.
fn elements(s: &str, surrogate: bool) -> Vec<(String, Arg, Option<String>)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && matches!(b[i], b' ' | b'\t' | b',') {
            i += 1;
        }
        let start = i;
        while i < b.len() && is_tchar(b[i]) {
            i += 1;
        }
        let name = &s[start..i];
        let mut arg = if i < b.len() && b[i] == b'=' {
            i += 1;
            let (arg, next) = argument(s, i);
            i = next;
            arg
        } else {
            Arg::None
        };
        let mut target = None;
        if surrogate && i < b.len() && b[i] == b';' {
            let start = i + 1;
            i = start;
            while i < b.len() && is_tchar(b[i]) {
                i += 1;
            }
            target = Some(s[start..i].to_string());
        }
        // Only white space may follow before the next comma.
        let mut clean = true;
        while i < b.len() && b[i] != b',' {
            clean &= matches!(b[i], b' ' | b'\t');
            i += if b[i] == b'"' { skip_quoted(b, i) } else { 1 };
        }
        // A known name with a malformed argument is kept as invalid (an
        // invalid max-age means stale, RFC 9111 §4.2.1).
        if !clean {
            arg = Arg::Invalid;
        }
        if !name.is_empty() {
            out.push((name.to_string(), arg, target));
        }
    }
    out
}

/// A token or quoted-string starting at `i`; returns it and where it ends.
fn argument(s: &str, i: usize) -> (Arg, usize) {
    let b = s.as_bytes();
    if i < b.len() && b[i] == b'"' {
        let mut v = Vec::new();
        let mut j = i + 1;
        while j < b.len() {
            match b[j] {
                b'"' => return (String::from_utf8(v).map_or(Arg::Invalid, Arg::Value), j + 1),
                b'\\' if j + 1 < b.len() => {
                    v.push(b[j + 1]);
                    j += 2;
                }
                c => {
                    v.push(c);
                    j += 1;
                }
            }
        }
        return (Arg::Invalid, j); // unterminated
    }
    let mut j = i;
    while j < b.len() && is_tchar(b[j]) {
        j += 1;
    }
    if j == i {
        return (Arg::Invalid, j);
    }
    (Arg::Value(s[i..j].to_string()), j)
}

/// Length of the quoted string at `b[i]`, so a stray one cannot hide a comma.
fn skip_quoted(b: &[u8], i: usize) -> usize {
    let mut j = i + 1;
    while j < b.len() && b[j] != b'"' {
        j += if b[j] == b'\\' { 2 } else { 1 };
    }
    (j + 1).min(b.len()) - i
}

/// A targeted field (RFC 9213 §2.1): a Structured Field Dictionary whose
/// known directives have their inferred types. `None` if it does not parse
/// or a known directive has the wrong type: the field is then ignored.
pub(crate) fn parse_targeted(value: &str) -> Option<Directives> {
    let dict: Dictionary = Parser::new(value).parse().ok()?;
    let mut d = Directives::default();
    for (key, entry) in &dict {
        let ListEntry::Item(item) = entry else {
            if known(key.as_str()) {
                return None;
            }
            continue;
        };
        targeted_member(&mut d, key.as_str(), &item.bare_item)?;
    }
    Some(d)
}

fn known(name: &str) -> bool {
    matches!(
        name,
        "no-store"
            | "no-cache"
            | "private"
            | "public"
            | "must-revalidate"
            | "proxy-revalidate"
            | "must-understand"
            | "max-age"
            | "s-maxage"
            | "stale-while-revalidate"
            | "stale-if-error"
    )
}

/// Applies one member; `None` if its value has the wrong type.
fn targeted_member(d: &mut Directives, name: &str, v: &BareItem) -> Option<()> {
    let int = || {
        let n = i64::from(v.as_integer()?);
        u64::try_from(n).ok()
    };
    let flag = |set: &mut bool| -> Option<()> {
        *set |= v.as_boolean()?;
        Some(())
    };
    match name {
        "max-age" => d.max_age = Some(int()?),
        "s-maxage" => d.s_maxage = Some(int()?),
        "stale-while-revalidate" => d.stale_while_revalidate = Some(int()?),
        "stale-if-error" => d.stale_if_error = Some(int()?),
        "no-store" => flag(&mut d.no_store)?,
        "public" => flag(&mut d.public)?,
        "must-revalidate" => flag(&mut d.must_revalidate)?,
        "proxy-revalidate" => flag(&mut d.proxy_revalidate)?,
        "must-understand" => flag(&mut d.must_understand)?,
        "no-cache" | "private" => {
            let (set, fields) = if name == "no-cache" {
                (&mut d.no_cache, &mut d.no_cache_fields)
            } else {
                (&mut d.private, &mut d.private_fields)
            };
            match v.as_string() {
                Some(s) => fields_or_flag(Arg::Value(s.as_str().to_string()), set, fields),
                None => *set |= v.as_boolean()?,
            }
        }
        _ => {}
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(v: &str) -> Directives {
        parse_cache_control([v], false)
    }

    #[test]
    fn names_are_case_insensitive_and_first_value_wins_rfc9111_4_2_1() {
        let d = cc("MaX-aGe=60, No-StOrE, max-age=5");
        assert_eq!(d.max_age, Some(60));
        assert!(d.no_store);
        let d = parse_cache_control(["max-age=1800", "max-age=1"], false);
        assert_eq!(d.max_age, Some(1800), "first line first");
        assert_eq!(cc("max-age=003600").max_age, Some(3600));
        assert_eq!(
            cc("max-age=99999999999999999999999").max_age,
            Some(u64::MAX)
        );
    }

    #[test]
    fn invalid_max_age_means_stale_rfc9111_4_2_1() {
        for v in [
            "max-age=-3600",
            "max-age=3600.5",
            "max-age='3600'",
            "max-age= 3600",
            "max-age =3600",
            "max-age=a1",
            "max-age=\"36\"00",
        ] {
            assert_eq!(cc(v).max_age, Some(0), "{v}");
        }
        assert_eq!(
            cc("max-age=\"3600\"").max_age,
            Some(3600),
            "quoted form accepted"
        );
        assert_eq!(
            cc("=3600, \"max-age=5\"").max_age,
            None,
            "no name, no directive"
        );
    }

    #[test]
    fn quoted_strings_hide_commas_and_directives() {
        let d = cc("extension=\"max-age=3600, public\", max-age=1");
        assert_eq!(d.max_age, Some(1));
        assert!(!d.public);
        let d = cc("max-age=1, extension=\"max-age=3600\"");
        assert_eq!(d.max_age, Some(1));
        let d = cc("no-cache=\"a, B\", private=\"c\", max-age=9");
        assert_eq!(d.no_cache_fields, vec!["a", "B"]);
        assert_eq!(d.private_fields, vec!["c"]);
        assert!(!d.no_cache && !d.private);
        assert_eq!(d.max_age, Some(9));
        assert!(cc("no-cache=\"unterminated, max-age=5").no_cache);
    }

    #[test]
    fn bare_no_cache_and_private_cover_the_response() {
        let d = cc("no-cache, private, public, must-revalidate, proxy-revalidate, must-understand");
        assert!(d.no_cache && d.private && d.public);
        assert!(d.must_revalidate && d.proxy_revalidate && d.must_understand);
        let d = cc("s-maxage=7, stale-while-revalidate=30, stale-if-error=600");
        assert_eq!(d.s_maxage, Some(7));
        assert_eq!(
            (d.stale_while_revalidate, d.stale_if_error),
            (Some(30), Some(600))
        );
        assert_eq!(cc(""), Directives::default());
        assert_eq!(cc(",,, ,"), Directives::default());
    }

    #[test]
    fn targeted_fields_are_structured_dictionaries_rfc9213_2_1() {
        let d = parse_targeted("max-age=600, no-cache=\"x\", foobar").unwrap();
        assert_eq!(d.max_age, Some(600));
        assert_eq!(d.no_cache_fields, vec!["x"]);
        let d = parse_targeted("no-store, private, must-revalidate").unwrap();
        assert!(d.no_store && d.private && d.must_revalidate);
        assert_eq!(
            parse_targeted("max-age=99999999999").unwrap().max_age,
            Some(99_999_999_999)
        );
        // Wrong types and unparsable values make the whole field invalid.
        for bad in [
            "max-age=\"10000\"",
            "max-age=-1",
            "max-age=1.5",
            "max-age=10000, &&&&&",
            "no-store=1",
            "private=tok",
            "MaX-aGe=3600",
            "max-age=(1 2)",
        ] {
            assert_eq!(parse_targeted(bad), None, "{bad}");
        }
        // Unknown members of any shape are ignored.
        assert!(parse_targeted("none").is_some());
        assert!(parse_targeted("x=(1 2), max-age=5").is_some());
    }

    #[test]
    fn surrogate_targets_count_only_for_this_device_edge_arch_3() {
        let d = parse_surrogate_control("max-age=60;rcdn").unwrap();
        assert_eq!(d.max_age, Some(60), "targeted here: not an invalid value");
        let d = parse_surrogate_control("max-age=60+30;RCDN, no-store;other").unwrap();
        assert_eq!((d.max_age, d.no_store), (Some(60), false));
        assert_eq!(
            parse_surrogate_control("max-age=60;other, no-store;x"),
            None
        );
        let d = parse_surrogate_control("no-store;other, max-age=5").unwrap();
        assert_eq!((d.max_age, d.no_store), (Some(5), false));
        assert!(parse_surrogate_control("content=\"ESI/1.0\"").is_some());
        // Cache-Control has no targets: `;x` makes the value invalid.
        assert_eq!(cc("max-age=60;rcdn").max_age, Some(0));
        // A field with nothing for this cache leaves Cache-Control in charge.
        let targets = vec!["Surrogate-Control".to_string()];
        let h = heads(&[
            ("Surrogate-Control", "max-age=9999;other"),
            ("Cache-Control", "no-store"),
        ]);
        assert_eq!(for_this_cache(&h, &targets), (cc("no-store"), false));
    }

    fn heads(h: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static [u8])> {
        h.iter().map(|(n, v)| (*n, v.as_bytes())).collect()
    }

    #[test]
    fn first_valid_targeted_field_replaces_cache_control_rfc9213_2_2() {
        let targets = vec![
            "CDN-Cache-Control".to_string(),
            "Surrogate-Control".to_string(),
        ];
        let h = heads(&[
            ("Cache-Control", "no-store"),
            ("cdn-cache-control", "max-age=60"),
        ]);
        let (d, targeted) = for_this_cache(&h, &targets);
        assert!(targeted && !d.no_store);
        assert_eq!(d.max_age, Some(60));
        // Invalid or empty: the next in the list, then Cache-Control.
        let h = heads(&[
            ("CDN-Cache-Control", "max-age=\"1\""),
            ("Surrogate-Control", "max-age=300+60, content=\"ESI/1.0\""),
            ("Cache-Control", "max-age=5"),
        ]);
        let (d, targeted) = for_this_cache(&h, &targets);
        assert!(targeted);
        assert_eq!(d.max_age, Some(300));
        let h = heads(&[("CDN-Cache-Control", " "), ("Cache-Control", "max-age=5")]);
        assert_eq!(for_this_cache(&h, &targets), (cc("max-age=5"), false));
        // Lines of one targeted field are one dictionary.
        let h = heads(&[
            ("CDN-Cache-Control", "max-age=9"),
            ("CDN-Cache-Control", "no-cache"),
        ]);
        let (d, _) = for_this_cache(&h, &targets);
        assert!(d.no_cache && d.max_age == Some(9));
        // A field not on the list changes nothing.
        let h = heads(&[
            ("Other-Cache-Control", "no-store"),
            ("Cache-Control", "max-age=5"),
        ]);
        assert_eq!(for_this_cache(&h, &targets), (cc("max-age=5"), false));
        assert_eq!(for_this_cache(&h, &[]), (cc("max-age=5"), false));
    }
}
