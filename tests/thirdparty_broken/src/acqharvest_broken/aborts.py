"""Raises a BaseException that is neither Exception nor SystemExit at import.

Some vendor SDKs derive their fatal errors from BaseException so that ``except
Exception`` blocks do not swallow them.
"""


class SdkAbort(BaseException):
    """The SDK's fatal error."""


raise SdkAbort("licence server unreachable")
