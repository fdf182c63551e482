"""Data: every input format becomes one PreferenceRecord at the edge; nothing past the loader sees a
format-specific field."""

from rewardkit.data.formats import FORMATS, detect_format, formats_fitting, resolve_format
from rewardkit.data.inspect import format_inspection, inspect_records, write_canonical_jsonl
from rewardkit.data.loader import LoadResult, LoadStats, agreed_split, iter_records, load_records, load_split
from rewardkit.data.paths import shared_data_dir
from rewardkit.data.record import Comparison, PreferenceRecord, Response

__all__ = [
    "FORMATS", "Comparison", "LoadResult", "LoadStats", "PreferenceRecord", "Response", "agreed_split",
    "detect_format", "format_inspection", "formats_fitting", "inspect_records", "iter_records", "load_records",
    "load_split", "resolve_format", "shared_data_dir", "write_canonical_jsonl",
]
