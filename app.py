"""Keyturn: wiring only.  Every route and handler lives in ``chalicelib``."""

from chalice import Chalice

from chalicelib.api import common
from chalicelib.api.vrli import PREFIX as VRLI_PREFIX
from chalicelib.api.vrli import error_response as vrli_errors
from chalicelib.api.vrli import vrli

# configure_logs=False: the "keyturn" logger is the structured one from chalicelib.logs.
app = Chalice(app_name="keyturn", configure_logs=False)
app.register_middleware(common.http_middleware, "http")
common.register_translator(VRLI_PREFIX, vrli_errors)
app.register_blueprint(vrli, url_prefix=VRLI_PREFIX)
