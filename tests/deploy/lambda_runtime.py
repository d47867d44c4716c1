"""Run an unzipped Lambda package as Lambda's Python 3.11 runtime would, driven over a pipe.

Started by ``tests/deploy`` with a clean interpreter that has only boto3/botocore (the
runtime's own packages), the package folder as the task root, and exactly the
environment the template gives the function.  Standard library only, like Lambda's
bootstrap: it puts the task root first on ``sys.path``, imports the handler module
named by ``_HANDLER`` (``app.app``) and calls it once per event.

Protocol: one JSON object per line on stdin, one JSON answer per line on stdout.
``{"event": {...}}`` → ``{"response": {...}}`` (the handler's return value);
``{"peak": true}`` → ``{"vmhwm_kb": N}`` (peak resident memory so far).
Logs go to stderr, as Lambda sends them to CloudWatch.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import uuid


class Context:
    """The parts of Lambda's context object the app reads."""

    def __init__(self) -> None:
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "function")
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        self.invoked_function_arn = f"arn:aws:lambda:{os.environ.get('AWS_REGION')}:123456789012:function:" \
                                    f"{self.function_name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "offline"
        self._deadline = time.monotonic() + 30

    def get_remaining_time_in_millis(self) -> int:
        return int((self._deadline - time.monotonic()) * 1000)


def peak_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


def main() -> int:
    task_root = os.environ["LAMBDA_TASK_ROOT"]
    sys.path.insert(0, task_root)
    os.chdir(task_root)
    module_name, attribute = os.environ["_HANDLER"].rsplit(".", 1)
    handler = getattr(importlib.import_module(module_name), attribute)
    out = sys.stdout
    sys.stdout = sys.stderr  # the app's logs must not mix with the protocol
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("peak"):
            answer = {"vmhwm_kb": peak_kb()}
        else:
            answer = {"response": handler(request["event"], Context())}
        out.write(json.dumps(answer) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
