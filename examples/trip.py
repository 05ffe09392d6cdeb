"""The seed's saga: book a flight, a hotel and a car; the car fails, so the hotel and then
the flight are undone, in reverse order, each undo a durable step. The run ends
`compensated` and keeps the original error.
"""

from __future__ import annotations

from pydantic import BaseModel

from dotdo import DO, PermanentError, compensate, step, workflow


class Trip(BaseModel):
    traveller: str
    destination: str
    nights: int


class Booking(BaseModel):
    kind: str
    id: str


class Itinerary(BaseModel):
    flight: Booking
    hotel: Booking
    car: Booking
    status: str


class Trips(DO):
    """Travel bookings. Each completed booking pushes its cancellation on a persisted stack."""

    cancelled: list[str] = []

    @step(retries=2, initial_delay=0.05)
    async def book_flight(self, trip: Trip) -> Booking:
        return Booking(kind="flight", id=f"FL-{trip.destination[:3].upper()}-1")

    @compensate(book_flight)
    async def cancel_flight(self, booking: Booking) -> None:
        Trips.cancelled.append(booking.id)
        print(f"  cancelled {booking.kind} {booking.id}")

    @step(retries=2, initial_delay=0.05)
    async def book_hotel(self, trip: Trip) -> Booking:
        return Booking(kind="hotel", id=f"HT-{trip.nights}N")

    @compensate(book_hotel)
    async def cancel_hotel(self, booking: Booking) -> None:
        Trips.cancelled.append(booking.id)
        print(f"  cancelled {booking.kind} {booking.id}")

    @step(retries=2, initial_delay=0.05)
    async def book_car(self, trip: Trip) -> Booking:
        raise PermanentError(f"no cars available in {trip.destination}")

    @compensate(book_car)
    async def cancel_car(self, booking: Booking) -> None:
        Trips.cancelled.append(booking.id)

    @workflow
    async def book_trip(self, trip: Trip) -> Itinerary:
        flight = await self.book_flight(trip)
        hotel = await self.book_hotel(trip)
        car = await self.book_car(trip)
        return Itinerary(flight=flight, hotel=hotel, car=car, status="confirmed")


SAMPLE = Trip(traveller="ada", destination="lisbon", nights=3)
