"""The shared store contract, run against the HTTP connectors where it applies.

The tests that count KDF runs (an unknown card must cost one dummy hash) do not apply: an ILS
connector never hashes, the ILS does. Everything else the read-only stores answer, these do.
"""

from tests.plugins.test_contract import (
    test_change_pin_is_refused_unless_capable,
    test_hostile_barcodes_are_only_data,
    test_is_a_store_and_tells_the_truth_about_itself,
    test_lookup_by_email_and_record_id,
    test_lookup_maps_standing,
    test_lookup_maps_the_record,
)

__all__ = [
    "test_change_pin_is_refused_unless_capable",
    "test_hostile_barcodes_are_only_data",
    "test_is_a_store_and_tells_the_truth_about_itself",
    "test_lookup_by_email_and_record_id",
    "test_lookup_maps_standing",
    "test_lookup_maps_the_record",
]
