"""The ClientApp: one per peer. It runs the step the relay asks for on this site's peer.

Deployment: the SuperNode's ``--node-config`` names the site (:class:`~.site.SiteSpec`).
Simulation: :func:`make_client_app` is given a function from a simulated node to its site.
The peer is built once per process and kept (see :mod:`.executor` for why that matters).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from secure_pcft.runtime.flower.records import StepReply, StepRequest
from secure_pcft.runtime.flower.site import SiteSpec, site_for

log = logging.getLogger(__name__)

SiteResolver = Callable[[Context], SiteSpec]


def node_config_site(context: Context) -> SiteSpec:
    """Deployment: the site named by the SuperNode's ``--node-config``."""
    return SiteSpec.from_node_config(context.node_config)


def make_client_app(resolve: SiteResolver = node_config_site) -> ClientApp:
    """A ClientApp whose single handler (``query.step``) runs one step on the resolved site."""
    app = ClientApp()

    @app.query("step")
    def step(msg: Message, context: Context) -> Message:
        request = StepRequest.from_record(msg.content)
        site = site_for(resolve(context))
        reply: StepReply = site.handle(request, context.node_id)
        return Message(reply.to_record(), reply_to=msg)

    return app


app = make_client_app()
