"""What an order looks like when it comes in (CLI file, operator event, shop event).

Validated with pydantic, so an operator or a shop gets every problem of a bad order at
once, each named by its field, instead of a half-created order.  Imported only where
orders are created: the activation API never pays for pydantic at cold start.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from chalicelib import errors
from chalicelib.hostids import HOSTID_TYPES

MAX_BULK = 1_000_000
_TOKEN = r"^[A-Za-z0-9_.+-]{1,64}$"  # feature names: one LM-X token


class Strict(BaseModel):
    """Unknown fields refused, text stripped, no type coercion: what every incoming model here is."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, strict=True)


class Customer(Strict):
    name: str = Field(min_length=1, max_length=200)


class Product(Strict):
    name: str = Field(min_length=1, max_length=200)
    version: str = Field(min_length=1, max_length=64)
    template: str = Field(default="Default", min_length=1, max_length=200)
    licenseGeneratorType: Literal["lm_x"] = "lm_x"

    @field_validator("name", "version", "template")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if any(char in value for char in '\r\n"'):
            raise ValueError("must be one line without double quotes (it is written into license files)")
        return value


class HostIdType(Strict):
    nameRaw: str
    min: int = Field(default=0, ge=0, le=16)
    max: int = Field(default=1, ge=1, le=16)

    @field_validator("nameRaw")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in HOSTID_TYPES:
            raise ValueError(f"unknown host id type; known: {', '.join(HOSTID_TYPES)}")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> "HostIdType":
        if self.min > self.max:
            raise ValueError("min must not exceed max")
        return self


class HostIdTemplate(Strict):
    types: list[HostIdType] = Field(min_length=1, max_length=len(HOSTID_TYPES))
    min: int = Field(default=1, ge=0, le=64)

    @model_validator(mode="after")
    def _consistent(self) -> "HostIdTemplate":
        names = [t.nameRaw for t in self.types]
        if len(set(names)) != len(names):
            raise ValueError("each host id type may be listed once")
        if self.min > sum(t.max for t in self.types):
            raise ValueError("min exceeds what the types allow together")
        return self


class Feature(Strict):
    name: str = Field(pattern=_TOKEN)
    version: str = Field(min_length=1, max_length=32, pattern=r"^[^\s\"]+$")
    count: int | None = Field(default=None, ge=1, le=MAX_BULK)


class OrderSpec(Strict):
    customer: Customer
    product: Product
    licenseType: Literal["local", "network"] = "local"
    bulkMax: int = Field(ge=1, le=MAX_BULK)
    hostid: HostIdTemplate
    features: list[Feature] = Field(min_length=1, max_length=100)
    expirationDate: date | None = None
    maintenanceEndDate: date | None = None
    deactivationsAllowed: int = Field(default=0, ge=0, le=MAX_BULK)

    @field_validator("expirationDate", "maintenanceEndDate", mode="before")
    @classmethod
    def _iso_date(cls, value: Any) -> Any:
        return date.fromisoformat(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _counts_match_the_license_type(self) -> "OrderSpec":
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        for feature in self.features:
            if self.licenseType == "network" and feature.count is None:
                raise ValueError(f"feature {feature.name}: network licenses need a count")
            if self.licenseType == "local" and feature.count is not None:
                raise ValueError(f"feature {feature.name}: only network licenses have a count")
        return self


def parse_order(data: Any) -> OrderSpec:
    """A valid order, or :class:`errors.InvalidOrder` listing every problem by field."""
    try:
        return OrderSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'order'}: {e['msg']}" for e in exc.errors())
        raise errors.InvalidOrder(f"Invalid order: {problems}") from None
