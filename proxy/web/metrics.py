# -*- test-case-name: tests.proxy.test_web_status -*-
"""Prometheus metrics of one SIP process, read from a `StatusObserver` at scrape time.

A custom collector on a per-process `CollectorRegistry` (not prometheus_client's
global one, so tests can run several servers in one process): the observer keeps
plain dict counters on the hot path, and only a scrape turns them into labelled
metric families.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from proxy.web.status import StatusObserver

TX_KINDS = ("server_invite", "server_non_invite", "client_invite", "client_non_invite")


def _label(value: bytes) -> str:
    return value.decode("ascii", "replace")


class SipCollector(Collector):
    def __init__(self, observer: StatusObserver) -> None:
        self.observer = observer

    def collect(self) -> Iterator[object]:
        obs = self.observer
        for name, doc, counts in (
            ("sip_requests_received", "SIP requests received, by method.", obs.requests_in),
            ("sip_requests_sent", "SIP requests sent, by method.", obs.requests_out),
        ):
            family = CounterMetricFamily(name, doc, labels=["method"])
            for method, n in sorted(counts.items()):
                family.add_metric([_label(method)], n)
            yield family
        for name, doc, responses in (
            ("sip_responses_received", "SIP responses received, by status and CSeq method.",
             obs.responses_in),
            ("sip_responses_sent", "SIP responses sent, by status and CSeq method.",
             obs.responses_out),
        ):
            family = CounterMetricFamily(name, doc, labels=["status", "method"])
            for (status, method), n in sorted(responses.items()):
                family.add_metric([_label(status), _label(method)], n)
            yield family

        errors = CounterMetricFamily(
            "sip_parse_errors", "Malformed messages answered or dropped by the transport, "
            "by the status they deserved.", labels=["status"],
        )
        for status, n in sorted(obs.parse_errors.items()):
            errors.add_metric([str(status)], n)
        yield errors

        tx = GaugeMetricFamily(
            "sip_transactions", "Live SIP transactions, by kind.", labels=["kind"]
        )
        by_kind = dict.fromkeys(TX_KINDS, 0)
        for (kind, _state), n in obs.transactions().items():
            by_kind[kind] = by_kind.get(kind, 0) + n
        for kind, n in by_kind.items():
            tx.add_metric([kind], n)
        yield tx

        yield GaugeMetricFamily(
            "sip_registrations", "Registered bindings (contacts) in the location service.",
            value=obs.registered_bindings,
        )
        yield GaugeMetricFamily(
            "sip_registered_aors", "Addresses-of-record with at least one binding.",
            value=obs.registered_aors,
        )

        yield GaugeMetricFamily(
            "sip_calls_active", "Calls in progress (initial INVITE seen, not ended yet).",
            value=len(obs.active_calls()),
        )

        outcomes = CounterMetricFamily(
            "sip_calls", "Calls by outcome, counted when the outcome is known.",
            labels=["outcome"],
        )
        for outcome, n in obs.call_outcomes.items():
            outcomes.add_metric([outcome], n)
        yield outcomes

        latency = HistogramMetricFamily(
            "sip_request_latency_seconds",
            "From a request's arrival to our response upstream: the first one for INVITE, "
            "the final one for REGISTER.", labels=["method"],
        )
        for method, hist in sorted(obs.latency.items()):
            latency.add_metric([_label(method)], hist.cumulative(), hist.total)
        yield latency

        yield GaugeMetricFamily(
            "sip_status_buffered_messages", "SIP messages held for the ladder pages.",
            value=len(obs.ring),
        )


def build_registry(observer: StatusObserver) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SipCollector(observer))
    return registry
