"""The endpoint and SDK client a batch goes through: its task's connection, else the default endpoint."""
from promptbeat.extensions import db
from promptbeat.llm import client as llm
from promptbeat.llm.connections import endpoint_of
from promptbeat.models import Connection


def endpoint(connection_id, settings):
    """The Endpoint of a connection (None: OPENAI_BASE_URL / OPENAI_API_KEY); raises LLMError if it is gone.

    May raise promptbeat.llm.crypto.CryptoError when the connection's key cannot be read.
    """
    if connection_id is None:
        return llm.Endpoint(base_url=settings.openai_base_url, api_key=settings.openai_api_key)
    connection = db.session.get(Connection, connection_id)
    db.session.remove()
    if connection is None:
        raise llm.LLMError(f"The connection (id {connection_id}) this batch was sent through was deleted.",
                           "ConnectionDeleted")
    return endpoint_of(connection, settings)
