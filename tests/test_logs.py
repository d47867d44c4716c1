"""Every log line the app writes masks activation keys and license keys, whatever carries them."""

from __future__ import annotations

import pytest

from chalicelib.logs import logger, mask, mask_keys

ACTIVATION_KEY = "25N8D-NC35D-WD01P-8JI4K"
LICENSE_KEY = "M502V-ABCDE-FGHIJ-KLMNO-PQRST"


def test_a_key_in_any_field_or_exception_of_a_log_line_is_masked(capsys: pytest.CaptureFixture[str]) -> None:
    logger.info("request", extra={"path": f"/rest/v1/licenses/{ACTIVATION_KEY}/Q1VTVE9NPWE=",
                                  "license": LICENSE_KEY.lower()})
    try:
        raise RuntimeError(f"no order {ACTIVATION_KEY}")
    except RuntimeError:
        logger.exception("failed")
    out = capsys.readouterr().out
    assert ACTIVATION_KEY not in out and LICENSE_KEY.lower() not in out
    assert out.count(mask(ACTIVATION_KEY)) == 3  # the path, the exception text and its traceback line
    assert mask(LICENSE_KEY.lower()) in out


@pytest.mark.parametrize(("text", "expected"), [
    (f"PUT /rest/v1/licenses/{ACTIVATION_KEY}/Q1VT HTTP/1.1", "PUT /rest/v1/licenses/25N8…(23)/Q1VT HTTP/1.1"),
    (f"key={ACTIVATION_KEY.lower()}", "key=25n8…(23)"),
    (LICENSE_KEY, "M502…(29)"),
    ("request 8e09d9f9-e301-4c2b-8a2f-0607fa01b94f", "request 8e09d9f9-e301-4c2b-8a2f-0607fa01b94f"),  # a uuid
    ("ABCDE-FGHIJ-KLMNO", "ABCDE-FGHIJ-KLMNO"),  # three groups are no key
])
def test_mask_keys_masks_four_and_five_group_keys_only(text: str, expected: str) -> None:
    assert mask_keys(text) == expected
