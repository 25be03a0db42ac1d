//! A look at an encoded request, without decoding it, for anything the processor
//! might convert: requests that hold none go on as their bytes, undecoded.

use super::Rules;
use crate::otlp::metric_names::any_metric_name;

/// Whether the request may hold something to convert: a metric whose name matches
/// a glob, or the bytes of a listed attribute key anywhere. Errs on the side of yes
/// (anything it cannot read says yes, and decoding then judges).
pub(super) fn may_convert(rules: &Rules, request: &[u8]) -> bool {
    let key_present = rules
        .attributes
        .iter()
        .any(|k| request.windows(k.len()).any(|w| w == k.as_bytes()));
    key_present || (!rules.metrics.is_empty() && any_metric_name(request, |n| rules.matches(n)))
}
