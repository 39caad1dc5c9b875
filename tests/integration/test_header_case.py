"""Header names are case-insensitive in HTTP (RFC 9110 §5.1): `CONTENT-TYPE` and `ACCEPT` in capitals are the
same headers on both fronts."""


import pytest

from tests.conftest import free_port
from tests.serving_helpers import FRONTS, local_server, probe_for, send

pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)
@pytest.mark.parametrize("front", FRONTS)
def test_upper_case_header_names_are_honoured(trained, tmp_path, front):
    body, index = probe_for(trained["archive"])
    with local_server(trained["archive"], free_port(), tmp_path / "server.log", front=front) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        for names in (("CONTENT-TYPE", "ACCEPT"), ("content-type", "accept"), ("Content-Type", "Accept")):
            status, answer = send(port, body, None, {names[0]: "image/jpeg", names[1]: "application/json"}, timeout=60)
            assert status == 200, (names, answer)
            assert answer["predictions"][0][0]["index"] == index
