//! Placeholder: the keyring and field encryption live here (issue 3).
