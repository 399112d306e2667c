//! Character-position masks: `partial`, `phone`, `email`, `cn_id`,
//! `bank_card`, `name` and `address`.
//!
//! Every function here works on Unicode scalar values (`char`), never on
//! bytes, so a multi-byte UTF-8 sequence (a Chinese character, an emoji) is
//! either kept whole or replaced whole, and the output is always valid
//! UTF-8. Each hidden character becomes exactly one `*` (or one `fill` for
//! `partial`), so the masked value has as many characters as the clear one:
//! a `varchar(n)` column still accepts it, and screens keep their layout.
//!
//! Characters are scalar values, not grapheme clusters: a flag emoji, a ZWJ
//! sequence or a letter followed by a combining accent counts as several
//! characters, and a mask may keep the first of them and hide the rest.
//! That reveals no more than the kept scalar itself.
//!
//! The short-value rules all lean the same way: when the usual rule would
//! show most or all of a short value, fewer characters are shown, down to
//! none; a mask never reveals a whole non-empty value.

/// What replaces a hidden character.
const MASK: char = '*';

/// The longest run of consecutive original characters that `phone`,
/// `cn_id` and `bank_card` ever output: 7 is the `138` + `5678` budget of a
/// phone number, and the bound still holds when separators (kept in place)
/// sit next to the kept digits. A kept character that would make the run
/// longer is masked instead.
pub(super) const MAX_RUN: usize = 7;

/// Pushes one [`MASK`] per character of `value`.
pub(super) fn mask_all(value: &str, out: &mut String) {
    out.extend(value.chars().map(|_| MASK));
}

/// `partial(first, last, fill)`: keeps the first `first` and last `last`
/// characters and writes `fill` once per character in between.
///
/// A value of at most `first + last` characters would be shown whole, so it
/// is written as `fill` once per character instead: the spec describes what
/// may be seen of a long value, not a licence to show a short one.
pub(super) fn partial(value: &str, first: usize, last: usize, fill: &str, out: &mut String) {
    let n = value.chars().count();
    if n <= first.saturating_add(last) {
        for _ in 0..n {
            out.push_str(fill);
        }
        return;
    }
    let tail = n - last;
    for (i, c) in value.chars().enumerate() {
        if i < first || i >= tail {
            out.push(c);
        } else {
            out.push_str(fill);
        }
    }
}

/// Characters that format a number rather than carry it (`+86 138-1234-5678`,
/// `(010) 6512 3456`, `6222 0212 ...`). They are kept in place and do not
/// count as digits, so the kept digits are the same whatever the format.
fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '-' | '+' | '(' | ')' | '.')
}

/// Keeps the first `first` and the last `last` significant (non-separator)
/// characters and separators, masks every other significant character, and
/// caps runs of kept characters at [`MAX_RUN`]. `first + last` must not
/// exceed the number of significant characters.
fn reveal(value: &str, n: usize, first: usize, last: usize, out: &mut String) {
    debug_assert!(first + last <= n);
    let tail = n - last;
    let mut index = 0;
    let mut run = 0;
    for c in value.chars() {
        let keep = if is_separator(c) {
            true
        } else {
            index += 1;
            index <= first || index > tail
        };
        if keep && run < MAX_RUN {
            out.push(c);
            run += 1;
        } else {
            out.push(MASK);
            run = 0;
        }
    }
}

/// Number of significant (non-separator) characters.
fn significant(value: &str) -> usize {
    value.chars().filter(|&c| !is_separator(c)).count()
}

/// Splits a budget of shown characters between the end (first, up to
/// `max_last`: the end is what people use to tell numbers apart) and the
/// start (up to `max_first`).
fn split_budget(budget: usize, max_first: usize, max_last: usize) -> (usize, usize) {
    let last = budget.min(max_last);
    let first = (budget - last).min(max_first);
    (first, last)
}

/// `phone`: `13812345678` → `138****5678`.
///
/// The first 3 and last 4 digits are kept, but at least 4 digits are always
/// hidden (so 8–10 digit numbers show fewer, the end first: `****5678` for
/// 8 digits) and a value of 7 or fewer digits is masked entirely, since
/// showing 3 of 7 digits of a short local number is too much. Separators
/// (`+`, `-`, space, parentheses, `.`) stay in place: `+86 138-1234-5678` →
/// `+86 1**-****-5678` (the country code counts as leading digits). Any
/// other character counts as a digit.
pub(super) fn phone(value: &str, out: &mut String) {
    let n = significant(value);
    let budget = if n <= 7 { 0 } else { (n - 4).min(7) };
    let (first, last) = split_budget(budget, 3, 4);
    reveal(value, n, first, last, out);
}

/// `cn_id`: the 18-character resident ID keeps its first 6 (region) and
/// last 4 characters: `110105********002X`.
///
/// Any other length (15-character first-generation IDs, typos, foreign
/// documents) shows at most the first 6 and last 4, but never more than
/// half of its characters, the end first. Separators stay in place as for
/// `phone`.
pub(super) fn cn_id(value: &str, out: &mut String) {
    let n = significant(value);
    let budget = if n == 18 { 10 } else { (n / 2).min(10) };
    let (first, last) = split_budget(budget, 6, 4);
    reveal(value, n, first, last, out);
}

/// `bank_card`: keeps the first 6 and last 4 digits, never more, which is
/// the most PCI DSS allows to display: `6222021234567890123` →
/// `622202*********0123`.
///
/// At least 6 digits always stay hidden (what 6 + 4 leaves of the common
/// 16-digit number), so shorter numbers show less, the end first: a
/// 13-digit number shows 3 + 4, a 10-digit one only its last 4.
/// Separators stay in place (`6222 02** **** ***0 123`).
pub(super) fn bank_card(value: &str, out: &mut String) {
    let n = significant(value);
    let budget = n.saturating_sub(6).min(10);
    let (first, last) = split_budget(budget, 6, 4);
    reveal(value, n, first, last, out);
}

/// Masks one word: its first character is kept and every other one
/// becomes `*`; a one-character word becomes `*`, since keeping its only
/// character would show it whole.
fn word(value: &str, out: &mut String) {
    let mut chars = value.chars();
    match (chars.next(), chars.clone().next()) {
        (None, _) => {}
        (Some(_), None) => out.push(MASK),
        (Some(c), Some(_)) => {
            out.push(c);
            out.extend(chars.map(|_| MASK));
        }
    }
}

/// `email`: `zhang.san@example.com` → `z********@example.com`.
///
/// The local part (before the last `@`, since a quoted local part may hold
/// one) is masked as a [`name`] word, the domain is kept so that support
/// staff can still tell a corporate address from a webmail one. A value
/// without `@` is not an address whose parts can be told apart, so every
/// character is masked.
pub(super) fn email(value: &str, out: &mut String) {
    match value.rfind('@') {
        Some(at) => {
            let (local, domain) = value.split_at(at);
            word(local, out);
            out.push_str(domain);
        }
        None => mask_all(value, out),
    }
}

/// `name`: `张三丰` → `张**`, `Alice Smith` → `A**** S****`.
///
/// Each whitespace-separated word keeps its first character; whitespace is
/// kept as is. A one-character word (`张`, the `J` of `J Smith`) is masked
/// entirely. Chinese names are written without spaces, so only the surname
/// shows.
pub(super) fn name(value: &str, out: &mut String) {
    let mut rest = value;
    while let Some(start) = rest.find(|c: char| !c.is_whitespace()) {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        word(&rest[..end], out);
        rest = &rest[end..];
    }
    out.push_str(rest);
}

/// `address`: keeps the first 6 characters (the city and district of a
/// Chinese address: `北京市朝阳区建国路88号` → `北京市朝阳区******`) and
/// masks every other character, spaces included, so word lengths do not
/// show either.
///
/// An address of 12 characters or fewer keeps only its first half (rounded
/// down), so a short value is never shown whole.
pub(super) fn address(value: &str, out: &mut String) {
    let n = value.chars().count();
    let keep = (n / 2).min(6);
    for (i, c) in value.chars().enumerate() {
        out.push(if i < keep { c } else { MASK });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(f: fn(&str, &mut String), value: &str) -> String {
        let mut out = String::from("prefix|");
        f(value, &mut out);
        out.strip_prefix("prefix|")
            .expect("masks only append")
            .to_owned()
    }

    fn partial_of(value: &str, first: usize, last: usize, fill: &str) -> String {
        let mut out = String::new();
        partial(value, first, last, fill, &mut out);
        out
    }

    #[test]
    fn partial_keeps_ends() {
        assert_eq!(partial_of("abcdefgh", 2, 1, "*"), "ab*****h");
        assert_eq!(partial_of("abcdefgh", 0, 0, "#"), "########");
        assert_eq!(partial_of("abcdefgh", 0, 3, "*"), "*****fgh");
        assert_eq!(partial_of("北京市朝阳区", 1, 1, "*"), "北****区");
        assert_eq!(partial_of("ab😀cd", 1, 1, "•"), "a•••d");
        // A multi-character fill repeats per hidden character.
        assert_eq!(partial_of("abcd", 1, 1, "xy"), "axyxyd");
        assert_eq!(partial_of("abcd", 1, 1, ""), "ad");
    }

    #[test]
    fn partial_short_values_are_fully_masked() {
        assert_eq!(partial_of("", 2, 1, "*"), "");
        assert_eq!(partial_of("a", 2, 1, "*"), "*");
        assert_eq!(partial_of("abc", 2, 1, "*"), "***");
        assert_eq!(partial_of("abcd", 2, 1, "*"), "ab*d");
        assert_eq!(partial_of("张三", 1, 1, "*"), "**");
        assert_eq!(partial_of("abc", usize::MAX, usize::MAX, "*"), "***");
    }

    #[test]
    fn phone_examples() {
        assert_eq!(run(phone, "13812345678"), "138****5678");
        assert_eq!(run(phone, "8613812345678"), "861******5678");
        assert_eq!(run(phone, "+86 138-1234-5678"), "+86 1**-****-5678");
        assert_eq!(run(phone, "(010) 6512-3456"), "(010) ****-3456");
        assert_eq!(run(phone, "1234567890"), "12****7890");
        assert_eq!(run(phone, "123456789"), "1****6789");
        assert_eq!(run(phone, "65123456"), "****3456");
    }

    #[test]
    fn phone_short_values_are_fully_masked() {
        assert_eq!(run(phone, ""), "");
        assert_eq!(run(phone, "1"), "*");
        assert_eq!(run(phone, "12"), "**");
        assert_eq!(run(phone, "123"), "***");
        assert_eq!(run(phone, "1234567"), "*******");
        assert_eq!(run(phone, "123-4567"), "***-****");
        assert_eq!(run(phone, "电话号码"), "****");
    }

    #[test]
    fn phone_caps_revealed_runs_when_separators_pile_up() {
        // The last 4 digits and their separators make a run of 8.
        assert_eq!(run(phone, "1-2-3-4-5-6-7-8-9-0-1"), "1-2-3-*-*-*-*-8-9-0-*");
        assert_eq!(run(phone, "           "), "       *   ");
    }

    #[test]
    fn cn_id_examples() {
        assert_eq!(run(cn_id, "11010519491231002X"), "110105********002X");
        // 15-character first-generation ID: 7 shown (half, rounded down).
        assert_eq!(run(cn_id, "110105491231002"), "110********1002");
        assert_eq!(run(cn_id, "1101051949123100"), "1101********3100");
        assert_eq!(run(cn_id, ""), "");
        assert_eq!(run(cn_id, "1"), "*");
        assert_eq!(run(cn_id, "12"), "*2");
        assert_eq!(run(cn_id, "123"), "**3");
        assert_eq!(run(cn_id, "身份证号码"), "***号码");
    }

    #[test]
    fn bank_card_examples() {
        assert_eq!(run(bank_card, "6222021234567890123"), "622202*********0123");
        assert_eq!(run(bank_card, "4111111111111111"), "411111******1111");
        assert_eq!(
            run(bank_card, "6222 0212 3456 7890 123"),
            "6222 02** **** ***0 123"
        );
        assert_eq!(run(bank_card, "4222222222222"), "422******2222");
        assert_eq!(run(bank_card, "1234567890"), "******7890");
        assert_eq!(run(bank_card, "123456"), "******");
        assert_eq!(run(bank_card, ""), "");
        assert_eq!(run(bank_card, "1"), "*");
        assert_eq!(run(bank_card, "123"), "***");
    }

    #[test]
    fn email_examples() {
        assert_eq!(run(email, "zhang.san@example.com"), "z********@example.com");
        assert_eq!(run(email, "a@example.com"), "*@example.com");
        assert_eq!(run(email, "ab@example.com"), "a*@example.com");
        assert_eq!(run(email, "\"a@b\"@example.com"), "\"****@example.com");
        assert_eq!(run(email, "张三@例子.中国"), "张*@例子.中国");
        assert_eq!(run(email, "@example.com"), "@example.com");
        assert_eq!(run(email, "not an address"), "**************");
        assert_eq!(run(email, ""), "");
        assert_eq!(run(email, "a"), "*");
        assert_eq!(run(email, "ab"), "**");
    }

    #[test]
    fn name_examples() {
        assert_eq!(run(name, "张三丰"), "张**");
        assert_eq!(run(name, "张三"), "张*");
        assert_eq!(run(name, "张"), "*");
        assert_eq!(run(name, "Alice Smith"), "A**** S****");
        assert_eq!(run(name, "J Smith"), "* S****");
        assert_eq!(run(name, "  Jean-Luc\tPicard "), "  J*******\tP***** ");
        assert_eq!(run(name, "阿卜杜·热合曼"), "阿******");
        assert_eq!(run(name, "😀😁"), "😀*");
        assert_eq!(run(name, ""), "");
        assert_eq!(run(name, "  "), "  ");
        assert_eq!(run(name, "ab"), "a*");
        assert_eq!(run(name, "abc"), "a**");
    }

    #[test]
    fn address_examples() {
        assert_eq!(run(address, "北京市朝阳区建国路88号"), "北京市朝阳区******");
        assert_eq!(run(address, "12 Main Street"), "12 Mai********");
        assert_eq!(run(address, "上海市黄浦区"), "上海市***");
        assert_eq!(run(address, ""), "");
        assert_eq!(run(address, "a"), "*");
        assert_eq!(run(address, "ab"), "a*");
        assert_eq!(run(address, "abc"), "a**");
        assert_eq!(run(address, "🏠🏡"), "🏠*");
    }
}
