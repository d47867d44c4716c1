"""Keyturn: wiring only.  Every route and handler lives in ``chalicelib``."""

from chalice import Chalice

from chalicelib import entry, functions, operator
from chalicelib.api import common, lac, vrli

# configure_logs=False: the "keyturn" logger is the structured one from chalicelib.logs.
app = Chalice(app_name="keyturn", configure_logs=False)
app.register_middleware(common.http_middleware, "http")
app.register_middleware(entry.bind_stage, "all")  # inside the HTTP one: a bad configuration is a 500 in the API's format
common.register_translator(vrli.PREFIX, vrli.error_response)
common.register_translator(lac.PREFIX, lac.error_response)
app.register_blueprint(vrli.vrli, url_prefix=vrli.PREFIX)
app.register_blueprint(lac.lac, url_prefix=lac.PREFIX)


@app.lambda_function(name="provision_queue")
def provision_queue(event: dict, context: object) -> dict:
    return functions.handle_queue(event, context)


@app.lambda_function(name="provision_events")
def provision_events(event: dict, context: object) -> dict:
    return functions.handle_event(event, context)


@app.lambda_function(name="operator")
def operator_function(event: dict, context: object) -> dict:
    return operator.handle(event, actor="operator-function")
