//! Small serde helpers shared by the wire types.

use serde::{Deserialize, Deserializer};

/// Treats an explicit JSON `null` like a missing field, because engines and SDKs send both.
pub(crate) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
